// The one place that fixes the bucket scheme and the record layout; Python reads these through _core.
#pragma once
#include <bit>
#include <cstdint>
#include <limits>

namespace stepwire {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

inline constexpr int kDefaultMantissaBits = 3;   // 8 buckets per power of two
inline constexpr int kMaxMantissaBits = 10;

// The histogram bucket scheme (DESIGN.md, "Histograms"): for a float32 x, bucket = sign(x) * (bits(|x|) >> (23 - k)).
// Doubles are binned as their float32 truncation toward zero would be, and finite doubles beyond float32's
// range continue the same rule (their exponents rebased as if float32 had more of them).
inline constexpr int kFloat32MantissaBits = 23;       // explicit mantissa bits of a float32
inline constexpr int kFloat64MantissaBits = 52;       // explicit mantissa bits of a float64
inline constexpr int kFloat32ExponentBias = 127;
inline constexpr int kFloat64ExponentBias = 1023;
// Subtracting this from a float64's biased exponent gives the float32 biased exponent of the same power of two.
inline constexpr int kExponentRebase = kFloat64ExponentBias - kFloat32ExponentBias;  // 896
// The first float64 biased exponent that is float32-normal (2^-126, float32's biased exponent 1); doubles below
// it are float32 denormals (or zero).
inline constexpr int kFirstFloat32NormalExponent = kExponentRebase + 1;  // 897
// Biased exponents a finite float32 has (0 to 254); 255 marks Inf and NaN. Slots at or above
// kFiniteFloat32Exponents << k in a table indexed by bits >> (23 - k) hold no finite float32.
inline constexpr int kFiniteFloat32Exponents = 255;
// The first float64 biased exponent beyond float32's range (2^128): such doubles, and Inf/NaN, have buckets
// whose magnitude is at least kFiniteFloat32Exponents << k.
inline constexpr int kBeyondFloat32Exponent = kExponentRebase + kFiniteFloat32Exponents;  // 1151
// The smallest float32 denormal is 2^-149 (= 2^-126 * 2^-23): a float32 denormal |x| has the bit pattern
// |x| * 2^149, and the smallest float32 normal is 2^-126.
inline constexpr int kDenormalScaleLog2 = (kFloat32ExponentBias - 1) + kFloat32MantissaBits;  // 149
inline constexpr int kSmallestNormalLog2 = -(kFloat32ExponentBias - 1);                         // -126
inline constexpr double kDenormalScale = 0x1p149;
inline constexpr double kSmallestFloat32Normal = 0x1p-126;
static_assert(kDenormalScale == static_cast<double>(1ULL << 63) * static_cast<double>(1ULL << 63) *
                                    static_cast<double>(1ULL << 23));
static_assert(kSmallestFloat32Normal * kDenormalScale == static_cast<double>(1u << kFloat32MantissaBits));
// Bit masks of the IEEE-754 encodings.
inline constexpr std::uint32_t kFloat32AbsMask = 0x7fffffffu;  // all but the sign bit
inline constexpr std::uint32_t kFloat32InfBits = 0x7f800000u;  // +Inf; a larger magnitude pattern is NaN
inline constexpr std::uint64_t kFloat64AbsMask = 0x7fffffffffffffffULL;
// Shift that turns float32 bits into a bucket magnitude with k mantissa bits kept.
constexpr int bucket_shift(int k) { return kFloat32MantissaBits - k; }
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
