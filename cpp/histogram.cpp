#include "histogram.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>

#include "bin_pool.hpp"
#include "scheme.hpp"

namespace stepwire {
namespace {

constexpr int kLanes = 2;                     // independent counter tables: equal neighbours don't serialise
constexpr std::size_t kBlock = 4096;          // values per pass pair; a block stays in L1 between the passes
constexpr std::size_t kFoldEvery = 1u << 30;  // fold uint32 lane counters into int64 before they can overflow
// A float64's magnitude bits >> kMantissaDrop keep float32's 23 mantissa bits; subtracting kRebaseBits then moves
// its exponent to float32's bias: the float32 bit pattern of its truncation, for float32-normal magnitudes.
constexpr int kMantissaDrop = kFloat64MantissaBits - kFloat32MantissaBits;  // 29
constexpr std::uint64_t kRebaseBits = std::uint64_t{kExponentRebase} << kFloat32MantissaBits;

struct BlockStats {
    double sum, sumsq;
    float lo, hi;
    // Smallest and largest magnitude bit pattern (bits & kFloat32AbsMask), NaN and Inf included: they bound the
    // counter slots the block touches. amax >= kFloat32InfBits means the block holds NaN or Inf, and then the
    // other fields are not to be used.
    std::uint32_t amin, amax;
};

// Sum, sum of squares, min and max of a block, assuming every value finite, and its range of magnitudes:
// branch-free, so it vectorises (16 float lanes, summed in float32 over runs of 64 values and then in float64:
// relative error ~1e-6). On x86-64 an AVX2 clone is picked at load time where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
BlockStats fast_stats_f32(const std::uint32_t* bits, std::size_t m) {
    constexpr std::size_t W = 16;
    constexpr std::size_t kRun = 64 * W;
    const auto* x = reinterpret_cast<const float*>(bits);
    double sum = 0.0, sumsq = 0.0;
    float lo[W], hi[W];
    std::uint32_t amin[W], amax[W] = {};
    std::fill(amin, amin + W, kFloat32AbsMask);
    std::fill(lo, lo + W, std::numeric_limits<float>::infinity());
    std::fill(hi, hi + W, -std::numeric_limits<float>::infinity());
    std::size_t i = 0;
    while (i + W <= m) {
        float acc[W] = {}, acc2[W] = {};
        const std::size_t end = std::min(m - m % W, i + kRun);
        for (; i < end; i += W) {
            for (std::size_t j = 0; j < W; ++j) {
                const float f = x[i + j];
                acc[j] += f;
                acc2[j] += f * f;
                lo[j] = f < lo[j] ? f : lo[j];
                hi[j] = f > hi[j] ? f : hi[j];
                const std::uint32_t a = bits[i + j] & kFloat32AbsMask;
                amin[j] = a < amin[j] ? a : amin[j];
                amax[j] = a > amax[j] ? a : amax[j];
            }
        }
        for (std::size_t j = 0; j < W; ++j) {
            sum += acc[j];
            sumsq += acc2[j];
        }
    }
    BlockStats b{sum, sumsq, *std::min_element(lo, lo + W), *std::max_element(hi, hi + W),
                 *std::min_element(amin, amin + W), *std::max_element(amax, amax + W)};
    for (; i < m; ++i) {
        b.amin = std::min(b.amin, bits[i] & kFloat32AbsMask);
        b.amax = std::max(b.amax, bits[i] & kFloat32AbsMask);
        b.sum += x[i];
        b.sumsq += static_cast<double>(x[i]) * x[i];
        b.lo = std::min(b.lo, x[i]);
        b.hi = std::max(b.hi, x[i]);
    }
    return b;
}

struct MagnitudeRange {
    std::uint32_t lo, hi;
};

// Smallest and largest magnitude bit pattern (bits & kFloat32AbsMask) of m float32 bit patterns: a pass of its
// own for blocks whose bits were computed (from doubles), where it vectorises (as int32: magnitudes < 2^31).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
MagnitudeRange magnitude_range(const std::uint32_t* bits, std::size_t m) {
    std::int32_t lo = std::numeric_limits<std::int32_t>::max(), hi = 0;
    for (std::size_t i = 0; i < m; ++i) {
        const auto a = static_cast<std::int32_t>(bits[i] & kFloat32AbsMask);
        lo = a < lo ? a : lo;
        hi = a > hi ? a : hi;
    }
    return {static_cast<std::uint32_t>(lo), static_cast<std::uint32_t>(hi)};
}

// Counts float32 bit patterns by `bits >> (23 - k)`: with the sign bit on top, one table of 2^(9+k) slots
// holds both signs (negatives from 2^(8+k) on); slots at or above kFiniteFloat32Exponents << k are NaN/Inf and
// are dropped.
//
// An accumulator is reused from one histogram to the next (one per thread and k, see ScopedAccumulator): it
// keeps the range of slot magnitudes [lo_slot_, hi_slot_] touched since reset(), for both signs, so that
// folding, finishing and resetting cost what the data touched (a few hundred slots for typical weights), not the
// 2^(9+k) slots of the table.
class Accumulator {
public:
    explicit Accumulator(int k)
        : k_(k), shift_(bucket_shift(k)), half_(1u << (31 - bucket_shift(k))),
          finite_(static_cast<std::uint32_t>(kFiniteFloat32Exponents) << k),
          lanes_(static_cast<std::size_t>(kLanes) * 2 * half_, 0), totals_(2 * half_, 0) {}

    // Back to empty: zeroes only the slots touched since the last reset.
    void reset() {
        if (lo_slot_ <= hi_slot_) {
            for (std::uint32_t sign = 0; sign < 2; ++sign) {
                for (int l = 0; l < kLanes; ++l) {
                    std::uint32_t* t = lanes_.data() + static_cast<std::size_t>(l) * 2 * half_ + sign * half_;
                    std::fill(t + lo_slot_, t + hi_slot_ + 1, 0u);
                }
                std::int64_t* t = totals_.data() + sign * half_;
                std::fill(t + lo_slot_, t + hi_slot_ + 1, 0);
            }
        }
        lo_slot_ = half_;
        hi_slot_ = 0;
        overflow_.clear();
        pending_ = 0;
        count_ = nan_ = pos_inf_ = neg_inf_ = 0;
        sum_ = sumsq_ = 0.0;
        min_ = std::numeric_limits<double>::infinity();
        max_ = -std::numeric_limits<double>::infinity();
    }

    void add_f32_bits(const std::uint32_t* bits, std::size_t n) {
        for (std::size_t off = 0; off < n; off += kBlock) {
            const std::size_t m = std::min(kBlock, n - off);
            stats_f32(bits + off, m);  // notes the block's magnitudes before count_f32 touches their slots
            count_f32(bits + off, m);
            pending_ += m;
            if (pending_ >= kFoldEvery) fold();
        }
        count_ += static_cast<std::int64_t>(n);
    }

    // Doubles are truncated toward zero to float32 bit patterns (exact for bucketing, since bucket edges are
    // float32 values) and counted like floats; a block holding NaN, Inf or |x| >= 2^128 goes value by value.
    void add_f64(const double* values, std::size_t n) {
        std::uint32_t bits[kBlock];
        for (std::size_t off = 0; off < n; off += kBlock) {
            const std::size_t m = std::min(kBlock, n - off);
            const double* x = values + off;
            std::uint32_t unusual = 0;
            for (std::size_t i = 0; i < m; ++i) {
                std::uint64_t u;
                std::memcpy(&u, &x[i], sizeof u);
                const std::uint64_t a = u & kFloat64AbsMask;
                const std::uint64_t e = a >> kFloat64MantissaBits;
                // float32-normal: the top 23 mantissa bits and the exponent rebased to float32's bias
                const auto normal = static_cast<std::uint32_t>((a >> kMantissaDrop) - kRebaseBits);
                // float32 denormal: |x| as a multiple of 2^-149, truncated (exact in double)
                const auto denormal =
                    static_cast<std::uint32_t>(std::min(std::fabs(x[i]), kSmallestFloat32Normal) * kDenormalScale);
                const auto sign = static_cast<std::uint32_t>(u >> 63) << 31;
                bits[i] = (e >= kFirstFloat32NormalExponent ? normal : denormal) | sign;
                unusual += e >= kBeyondFloat32Exponent ? 1u : 0u;
            }
            if (unusual != 0) [[unlikely]] {
                add_f64_one_by_one(x, m);
                continue;
            }
            const MagnitudeRange r = magnitude_range(bits, m);
            note_slots(r.lo >> shift_, r.hi >> shift_);
            stats_f64(x, m);
            count_f32(bits, m);
            pending_ += m;
            if (pending_ >= kFoldEvery) fold();
        }
        count_ += static_cast<std::int64_t>(n);
    }

    Histogram finish() {
        fold();
        Histogram h;
        h.k = k_;
        h.count = count_;
        h.nan = nan_;
        h.pos_inf = pos_inf_;
        h.neg_inf = neg_inf_;
        h.sum = sum_;
        h.sumsq = sumsq_;
        const bool any_finite = min_ <= max_;
        h.min = any_finite ? min_ : std::numeric_limits<double>::quiet_NaN();
        h.max = any_finite ? max_ : std::numeric_limits<double>::quiet_NaN();
        // the finite slots touched: [lo, hi] (empty when lo > hi)
        const std::uint32_t lo = std::max(lo_slot_, 1u), hi = std::min(hi_slot_, finite_ - 1);
        const std::size_t slots = (hi >= lo ? 2 * std::size_t{hi - lo + 1} : 0) + 1 + overflow_.size();
        const std::size_t most = std::min(slots, static_cast<std::size_t>(count_ - nan_ - pos_inf_ - neg_inf_));
        h.indices.reserve(most);
        h.counts.reserve(most);
        auto emit = [&h](std::int32_t idx, std::int64_t c) {
            if (c != 0) {
                h.indices.push_back(idx);
                h.counts.push_back(c);
            }
        };
        for (auto it = overflow_.begin(); it != overflow_.end() && it->first < 0; ++it) emit(it->first, it->second);
        for (std::uint32_t m = hi; m >= lo; --m) emit(-static_cast<std::int32_t>(m), totals_[half_ + m]);
        if (lo_slot_ == 0) emit(0, totals_[0] + totals_[half_]);  // +0 and -0 (and the smallest denormals)
        for (std::uint32_t m = lo; m <= hi; ++m) emit(static_cast<std::int32_t>(m), totals_[m]);
        for (const auto& [idx, c] : overflow_) {
            if (idx > 0) emit(idx, c);
        }
        return h;
    }

private:
    void special(bool is_nan, bool positive) {
        if (is_nan) {
            ++nan_;
        } else if (positive) {
            ++pos_inf_;
        } else {
            ++neg_inf_;
        }
    }

    void add_f64_one_by_one(const double* values, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            const double x = values[i];
            if (!std::isfinite(x)) {
                special(std::isnan(x), x > 0);
                continue;
            }
            const std::int32_t idx = bucket_index(x, k_);
            const std::uint32_t mag = static_cast<std::uint32_t>(idx < 0 ? -idx : idx);
            if (mag < finite_) {
                note_slots(mag, mag);
                ++totals_[(std::signbit(x) ? half_ : 0) + mag];
            } else {
                ++overflow_[idx];  // finite doubles beyond float32's range keep their own buckets
            }
            sum_ += x;
            sumsq_ += x * x;
            min_ = std::min(min_, x);
            max_ = std::max(max_, x);
        }
    }

    // Sum, min and max of a block of finite doubles, in 8 independent lanes.
    void stats_f64(const double* x, std::size_t m) {
        constexpr std::size_t W = 8;
        double acc[W] = {}, acc2[W] = {}, lo[W], hi[W];
        std::fill(lo, lo + W, std::numeric_limits<double>::infinity());
        std::fill(hi, hi + W, -std::numeric_limits<double>::infinity());
        std::size_t i = 0;
        for (; i + W <= m; i += W) {
            for (std::size_t j = 0; j < W; ++j) {
                acc[j] += x[i + j];
                acc2[j] += x[i + j] * x[i + j];
                lo[j] = x[i + j] < lo[j] ? x[i + j] : lo[j];
                hi[j] = x[i + j] > hi[j] ? x[i + j] : hi[j];
            }
        }
        for (; i < m; ++i) {
            acc[0] += x[i];
            acc2[0] += x[i] * x[i];
            lo[0] = std::min(lo[0], x[i]);
            hi[0] = std::max(hi[0], x[i]);
        }
        for (std::size_t j = 0; j < W; ++j) {
            sum_ += acc[j];
            sumsq_ += acc2[j];
        }
        min_ = std::min(min_, *std::min_element(lo, lo + W));
        max_ = std::max(max_, *std::max_element(hi, hi + W));
    }

    // Sum, min and max of a block. The fast pass assumes every value is finite (it vectorises: 16 float lanes,
    // summed in float32 over runs of 64 values and then in float64, relative error ~1e-6); a block holding
    // NaN or Inf is redone exactly by a scalar pass that counts and skips them.
    void stats_f32(const std::uint32_t* bits, std::size_t m) {
        const BlockStats b = fast_stats_f32(bits, m);
        note_slots(b.amin >> shift_, b.amax >> shift_);
        if (b.amax >= kFloat32InfBits) [[unlikely]] {
            exact_stats_f32(reinterpret_cast<const float*>(bits), bits, m);
            return;
        }
        sum_ += b.sum;
        sumsq_ += b.sumsq;
        min_ = std::min(min_, static_cast<double>(b.lo));
        max_ = std::max(max_, static_cast<double>(b.hi));
    }

    void exact_stats_f32(const float* x, const std::uint32_t* bits, std::size_t m) {
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint32_t a = bits[i] & kFloat32AbsMask;
            if (a >= kFloat32InfBits) {
                special(a > kFloat32InfBits, (bits[i] >> 31) == 0);
                continue;
            }
            sum_ += x[i];
            sumsq_ += static_cast<double>(x[i]) * x[i];
            min_ = std::min(min_, static_cast<double>(x[i]));
            max_ = std::max(max_, static_cast<double>(x[i]));
        }
    }

    void count_f32(const std::uint32_t* bits, std::size_t m) {
        std::uint32_t* lane0 = lanes_.data();
        std::uint32_t* lane1 = lane0 + 2 * half_;
        const int shift = shift_;  // a local: stores through uint32_t* could alias the member
        std::size_t i = 0;
        for (; i + 2 <= m; i += 2) {
            ++lane0[bits[i] >> shift];
            ++lane1[bits[i + 1] >> shift];
        }
        if (i < m) ++lane0[bits[i] >> shift];
    }

    // Slot magnitudes lo..hi (of either sign) are about to be counted.
    void note_slots(std::uint32_t lo, std::uint32_t hi) {
        lo_slot_ = std::min(lo_slot_, lo);
        hi_slot_ = std::max(hi_slot_, hi);
    }

    // Adds the lane counters into the totals and zeroes them, over the slots touched (NaN/Inf slots: zeroed only).
    void fold() {
        if (lo_slot_ > hi_slot_) return;
        const std::uint32_t finite_hi = std::min(hi_slot_ + 1, finite_);
        for (int l = 0; l < kLanes; ++l) {
            for (std::uint32_t sign = 0; sign < 2; ++sign) {
                std::uint32_t* t = lanes_.data() + static_cast<std::size_t>(l) * 2 * half_ + sign * half_;
                std::int64_t* total = totals_.data() + sign * half_;
                for (std::uint32_t mag = lo_slot_; mag < finite_hi; ++mag) total[mag] += t[mag];
                std::fill(t + lo_slot_, t + hi_slot_ + 1, 0u);
            }
        }
        pending_ = 0;
    }

    int k_;
    int shift_;
    std::uint32_t half_;                   // slots per sign
    std::uint32_t finite_;                 // slots per sign holding finite float32 values
    std::uint32_t lo_slot_ = half_;        // slot magnitudes touched since reset(): [lo_slot_, hi_slot_]
    std::uint32_t hi_slot_ = 0;
    std::vector<std::uint32_t> lanes_;     // kLanes x 2 x half_
    std::vector<std::int64_t> totals_;     // 2 x half_
    std::map<std::int32_t, std::int64_t> overflow_;
    std::size_t pending_ = 0;
    std::int64_t count_ = 0, nan_ = 0, pos_inf_ = 0, neg_inf_ = 0;
    double sum_ = 0.0;
    double sumsq_ = 0.0;
    double min_ = std::numeric_limits<double>::infinity();
    double max_ = -std::numeric_limits<double>::infinity();
};

// float16 (IEEE binary16) and bfloat16 layouts, widened exactly to float32 bit patterns.
constexpr int kFloat16MantissaBits = 10;
constexpr std::uint32_t kFloat16ExponentMask = 0x1fu;  // 5 exponent bits; all ones is Inf/NaN
constexpr std::uint32_t kFloat16ExponentRebase = kFloat32ExponentBias - 15;  // 112: float16's bias is 15
constexpr int kFloat16ToFloat32Shift = kFloat32MantissaBits - kFloat16MantissaBits;  // 13
constexpr int kBFloat16Shift = 16;  // bfloat16 is the top half of a float32

std::uint32_t half_to_float_bits(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h >> 15) << 31;
    const std::uint32_t exp = (h >> kFloat16MantissaBits) & kFloat16ExponentMask;
    const std::uint32_t man = h & ((1u << kFloat16MantissaBits) - 1);
    if (exp == kFloat16ExponentMask) return sign | kFloat32InfBits | (man << kFloat16ToFloat32Shift);
    if (exp != 0) {
        return sign | ((exp + kFloat16ExponentRebase) << kFloat32MantissaBits) | (man << kFloat16ToFloat32Shift);
    }
    const float f = static_cast<float>(man) * 0x1p-24f;  // denormal: man * 2^-24 (2^-14 * 2^-10), exact
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return sign | u;
}

// Accumulators are reused per thread: a histogram of 16 values then costs what it touches, not the allocation and
// zeroing of a table of 2^(9+k) slots (64 KiB at k = 3). Tables of k > kCachedMaxK (over 1 MiB each) are not
// kept: they are rare, and they would hold that much memory per thread for the life of the thread.
constexpr int kCachedMaxK = 7;

class ScopedAccumulator {
public:
    explicit ScopedAccumulator(int k) {
        if (k <= kCachedMaxK) {
            thread_local std::array<std::unique_ptr<Accumulator>, kCachedMaxK + 1> cache;
            auto& slot = cache[static_cast<std::size_t>(k)];
            if (!slot) slot = std::make_unique<Accumulator>(k);
            acc_ = slot.get();
            acc_->reset();  // here, not after use: a use cut short by an exception leaves it dirty
        } else {
            owned_ = std::make_unique<Accumulator>(k);
            acc_ = owned_.get();
        }
    }
    Accumulator* operator->() { return acc_; }

private:
    std::unique_ptr<Accumulator> owned_;
    Accumulator* acc_;
};

// bin_values without the check of k.
Histogram bin_unchecked(const void* data, std::size_t n, FloatFormat format, int k) {
    ScopedAccumulator acc(k);
    switch (format) {
        case FloatFormat::F32:
            acc->add_f32_bits(static_cast<const std::uint32_t*>(data), n);
            break;
        case FloatFormat::F64:
            acc->add_f64(static_cast<const double*>(data), n);
            break;
        case FloatFormat::F16:
        case FloatFormat::BF16: {
            const auto* src = static_cast<const std::uint16_t*>(data);
            std::array<std::uint32_t, kBlock> block;
            for (std::size_t i = 0; i < n; i += kBlock) {
                const std::size_t m = std::min(kBlock, n - i);
                if (format == FloatFormat::F16) {
                    for (std::size_t j = 0; j < m; ++j) block[j] = half_to_float_bits(src[i + j]);
                } else {
                    for (std::size_t j = 0; j < m; ++j) block[j] = static_cast<std::uint32_t>(src[i + j]) << kBFloat16Shift;
                }
                acc->add_f32_bits(block.data(), m);
            }
            break;
        }
    }
    return acc->finish();
}

void check_k(int k) {
    if (k < 0 || k > kMaxMantissaBits) throw std::invalid_argument("k must be between 0 and 10");
}

}  // namespace

std::int32_t bucket_index(double x, int k) {
    std::uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    const std::uint64_t a = u & kFloat64AbsMask;
    std::int64_t mag;
    if ((a >> kFloat64MantissaBits) >= kFirstFloat32NormalExponent) {
        // float32-normal range and beyond: exponent and top k mantissa bits, rebased to float32's bias
        mag = static_cast<std::int64_t>(a >> (kFloat64MantissaBits - k)) - (std::int64_t{kExponentRebase} << k);
    } else {
        // float32 denormal range: truncating |x| to a multiple of 2^-149 is exact in double
        const auto m = static_cast<std::uint32_t>(std::fabs(x) * kDenormalScale);
        mag = m >> bucket_shift(k);
    }
    const auto idx = static_cast<std::int32_t>(mag);
    return (u >> 63) ? -idx : idx;
}

Histogram bin_values(const void* data, std::size_t n, FloatFormat format, int k) {
    check_k(k);
    return bin_unchecked(data, n, format, k);
}

void merge_into(Histogram& into, const Histogram& other) {
    std::vector<std::int32_t> idx;
    std::vector<std::int64_t> cnt;
    idx.reserve(into.indices.size() + other.indices.size());
    cnt.reserve(idx.capacity());
    std::size_t i = 0, j = 0;
    while (i < into.indices.size() || j < other.indices.size()) {
        if (j == other.indices.size() || (i < into.indices.size() && into.indices[i] < other.indices[j])) {
            idx.push_back(into.indices[i]);
            cnt.push_back(into.counts[i++]);
        } else if (i == into.indices.size() || other.indices[j] < into.indices[i]) {
            idx.push_back(other.indices[j]);
            cnt.push_back(other.counts[j++]);
        } else {
            idx.push_back(into.indices[i]);
            cnt.push_back(into.counts[i++] + other.counts[j++]);
        }
    }
    into.indices = std::move(idx);
    into.counts = std::move(cnt);
    const bool into_finite = !std::isnan(into.min), other_finite = !std::isnan(other.min);
    if (other_finite) {
        into.min = into_finite ? std::min(into.min, other.min) : other.min;
        into.max = into_finite ? std::max(into.max, other.max) : other.max;
    }
    into.count += other.count;
    into.sum += other.sum;
    into.sumsq += other.sumsq;
    into.nan += other.nan;
    into.pos_inf += other.pos_inf;
    into.neg_inf += other.neg_inf;
}

std::vector<Histogram> bin_many(const std::vector<BinInput>& inputs, int k, unsigned threads) {
    check_k(k);
    constexpr std::size_t kChunk = 1u << 18;  // elements per task: enough to amortise a task, small to balance
    struct Task {
        std::size_t input, offset, n;
    };
    std::vector<Task> tasks;
    std::size_t total = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        for (std::size_t off = 0; off < inputs[i].n || (off == 0 && inputs[i].n == 0); off += kChunk) {
            tasks.push_back({i, off, std::min(kChunk, inputs[i].n - off)});
            if (inputs[i].n == 0) break;
        }
        total += inputs[i].n;
    }
    std::vector<Histogram> parts(tasks.size());
    // Small totals stay on the caller: waking a worker costs more than binning them.
    const unsigned n_threads = total < 2 * kChunk ? 1u : std::max(1u, threads);
    parallel_for(tasks.size(), n_threads, [&](std::size_t t) {
        const Task& task = tasks[t];
        const BinInput& in = inputs[task.input];
        const std::size_t itemsize = in.format == FloatFormat::F64 ? 8 : in.format == FloatFormat::F32 ? 4 : 2;
        parts[t] = bin_unchecked(static_cast<const char*>(in.data) + task.offset * itemsize, task.n, in.format, k);
    });
    if (tasks.size() == inputs.size()) return parts;  // one task per input, in order
    std::vector<Histogram> out(inputs.size());
    std::vector<bool> seen(inputs.size(), false);
    for (std::size_t t = 0; t < tasks.size(); ++t) {
        const std::size_t i = tasks[t].input;
        if (!seen[i]) {
            out[i] = std::move(parts[t]);
            seen[i] = true;
        } else {
            merge_into(out[i], parts[t]);
        }
    }
    return out;
}

}  // namespace stepwire
