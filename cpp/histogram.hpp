// Log-linear histogram binning from IEEE-754 bits: bucket = sign(x) * (bits(|x| as float32) >> (23 - k)).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace stepwire {

// A finished histogram: occupied buckets only, plus exact summary statistics.
// count includes NaN and infinities; sum/min/max and the buckets cover finite values only.
struct Histogram {
    int k = 0;
    std::vector<std::int32_t> indices;  // ascending
    std::vector<std::int64_t> counts;
    std::int64_t count = 0;
    double sum = 0.0;
    double sumsq = 0.0;  // sum of squares of the finite values (for norms); not part of the wire format
    double min = 0.0;  // NaN when there is no finite value
    double max = 0.0;
    std::int64_t nan = 0;
    std::int64_t pos_inf = 0;
    std::int64_t neg_inf = 0;
};

enum class FloatFormat { F16, BF16, F32, F64 };

// Bins n values of the given format. Pure C++: callers may run it without the GIL.
Histogram bin_values(const void* data, std::size_t n, FloatFormat format, int k);

// One array to bin: its data, length and format.
struct BinInput {
    const void* data;
    std::size_t n;
    FloatFormat format;
};

// Bins several arrays using up to `threads` threads (large arrays are split into chunks whose histograms
// merge exactly). Pure C++: callers may run it without the GIL.
std::vector<Histogram> bin_many(const std::vector<BinInput>& inputs, int k, unsigned threads);

// Adds `other` into `into` (same k): counts of equal buckets add, statistics combine.
void merge_into(Histogram& into, const Histogram& other);

// Bucket index of one double, exactly as its float32 truncation toward zero would be binned.
std::int32_t bucket_index(double x, int k);

}  // namespace stepwire
