// The one place that fixes the bucket scheme and the record layout; Python reads these through _core.
#pragma once
#include <bit>
#include <cstdint>
#include <limits>

namespace stepwire {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

inline constexpr int kDefaultMantissaBits = 3;   // 8 buckets per power of two
inline constexpr int kMaxMantissaBits = 10;
inline constexpr int kMaxNameBytes = 256;        // UTF-8 bytes in a series name
// The largest step: the auto-step counter (one past the highest step logged) then still fits in an int64.
inline constexpr long long kMaxStep = std::numeric_limits<long long>::max() - 1;

enum class SeriesKind : std::uint8_t { Scalar = 1, Histogram = 2 };

// One logged scalar as it travels through a ring: fixed size, no pointers.
struct Record {
    std::uint32_t series;
    std::uint32_t reserved;
    std::int64_t step;
    double value;
    double wall_time;  // seconds since the Unix epoch
};
static_assert(sizeof(Record) == 32);

// Bytes one scalar point occupies in a sealed batch (step + value + wall time + its share of a series id).
inline constexpr std::size_t kPointBytes = 8 + 8 + 8 + 4;

}  // namespace stepwire
