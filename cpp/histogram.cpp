#include "histogram.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>

#include "scheme.hpp"

namespace stepwire {
namespace {

constexpr int kLanes = 4;                  // independent counter tables: neighbouring equal values don't serialise
constexpr std::size_t kFoldEvery = 1u << 30;  // fold uint32 lane counters into int64 before they can overflow
constexpr std::size_t kConvertBlock = 2048;   // float16/bfloat16 are widened to float32 bits in blocks this size

class Accumulator {
public:
    explicit Accumulator(int k)
        : k_(k), shift_(23 - k), nb_(255u << k), lanes_(static_cast<std::size_t>(kLanes) * 2 * nb_, 0),
          totals_(2 * nb_, 0) {
        sum_.fill(0.0);
        min_.fill(std::numeric_limits<double>::infinity());
        max_.fill(-std::numeric_limits<double>::infinity());
    }

    void add_f32_bits(const std::uint32_t* bits, std::size_t n) {
        while (n > 0) {
            const std::size_t take = std::min(n, kFoldEvery - pending_);
            run_f32(bits, take);
            bits += take;
            n -= take;
            pending_ += take;
            if (pending_ == kFoldEvery) fold();
        }
    }

    void add_f64(const double* values, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            const double x = values[i];
            std::uint64_t u;
            std::memcpy(&u, &x, sizeof u);
            if ((u & 0x7fffffffffffffffULL) >= 0x7ff0000000000000ULL) {
                special(std::isnan(x), x > 0);
                continue;
            }
            const std::int32_t idx = bucket_index(x, k_);
            const std::uint32_t mag = static_cast<std::uint32_t>(idx < 0 ? -idx : idx);
            if (mag < nb_) {
                ++totals_[(u >> 63) * nb_ + mag];
            } else {
                ++overflow_[idx];  // finite doubles beyond float32's range keep their own buckets
            }
            sum_[0] += x;
            min_[0] = std::min(min_[0], x);
            max_[0] = std::max(max_[0], x);
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
        h.sum = sum_[0] + sum_[1] + sum_[2] + sum_[3];
        const double mn = *std::min_element(min_.begin(), min_.end());
        const double mx = *std::max_element(max_.begin(), max_.end());
        const bool any_finite = mn <= mx;
        h.min = any_finite ? mn : std::numeric_limits<double>::quiet_NaN();
        h.max = any_finite ? mx : std::numeric_limits<double>::quiet_NaN();
        auto emit = [&h](std::int32_t idx, std::int64_t c) {
            if (c != 0) {
                h.indices.push_back(idx);
                h.counts.push_back(c);
            }
        };
        for (auto it = overflow_.begin(); it != overflow_.end() && it->first < 0; ++it) emit(it->first, it->second);
        for (std::uint32_t m = nb_ - 1; m >= 1; --m) emit(-static_cast<std::int32_t>(m), totals_[nb_ + m]);
        emit(0, totals_[0] + totals_[nb_]);  // +0 and -0 (and the smallest denormals) share bucket 0
        for (std::uint32_t m = 1; m < nb_; ++m) emit(static_cast<std::int32_t>(m), totals_[m]);
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

    void run_f32(const std::uint32_t* bits, std::size_t n) {
        std::uint32_t* lane[kLanes];
        for (int l = 0; l < kLanes; ++l) lane[l] = lanes_.data() + static_cast<std::size_t>(l) * 2 * nb_;
        std::array<double, kLanes> sum = sum_;
        std::array<float, kLanes> mn, mx;
        for (int l = 0; l < kLanes; ++l) {
            mn[l] = static_cast<float>(std::min(min_[l], static_cast<double>(std::numeric_limits<float>::infinity())));
            mx[l] = static_cast<float>(std::max(max_[l], -static_cast<double>(std::numeric_limits<float>::infinity())));
        }
        auto one = [&](int l, std::uint32_t u) {
            const std::uint32_t a = u & 0x7fffffffu;
            if (a >= 0x7f800000u) [[unlikely]] {
                special(a > 0x7f800000u, (u >> 31) == 0);
                return;
            }
            ++lane[l][(u >> 31) * nb_ + (a >> shift_)];
            float f;
            std::memcpy(&f, &u, sizeof f);
            sum[l] += f;
            mn[l] = f < mn[l] ? f : mn[l];
            mx[l] = f > mx[l] ? f : mx[l];
        };
        std::size_t i = 0;
        for (; i + kLanes <= n; i += kLanes) {
            one(0, bits[i]);
            one(1, bits[i + 1]);
            one(2, bits[i + 2]);
            one(3, bits[i + 3]);
        }
        for (; i < n; ++i) one(0, bits[i]);
        sum_ = sum;
        for (int l = 0; l < kLanes; ++l) {
            min_[l] = mn[l];
            max_[l] = mx[l];
        }
        count_ += static_cast<std::int64_t>(n);
    }

    void fold() {
        if (pending_ == 0) return;
        for (int l = 0; l < kLanes; ++l) {
            std::uint32_t* t = lanes_.data() + static_cast<std::size_t>(l) * 2 * nb_;
            for (std::size_t i = 0; i < 2 * nb_; ++i) {
                totals_[i] += t[i];
                t[i] = 0;
            }
        }
        pending_ = 0;
    }

    int k_;
    int shift_;
    std::uint32_t nb_;                     // buckets per sign for float32's finite range
    std::vector<std::uint32_t> lanes_;     // kLanes x (positive | negative) x nb_
    std::vector<std::int64_t> totals_;     // (positive | negative) x nb_
    std::map<std::int32_t, std::int64_t> overflow_;
    std::size_t pending_ = 0;
    std::int64_t count_ = 0, nan_ = 0, pos_inf_ = 0, neg_inf_ = 0;
    std::array<double, kLanes> sum_{}, min_{}, max_{};
};

std::uint32_t half_to_float_bits(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h >> 15) << 31;
    const std::uint32_t exp = (h >> 10) & 0x1fu;
    const std::uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return sign | 0x7f800000u | (man << 13);
    if (exp != 0) return sign | ((exp + 112u) << 23) | (man << 13);
    const float f = static_cast<float>(man) * 5.9604644775390625e-08f;  // denormal: man * 2^-24, exact
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return sign | u;
}

}  // namespace

std::int32_t bucket_index(double x, int k) {
    std::uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    const std::uint64_t a = u & 0x7fffffffffffffffULL;
    std::int64_t mag;
    if ((a >> 52) >= 897) {
        // float32-normal range and beyond: exponent and top k mantissa bits, rebased to float32's bias
        mag = static_cast<std::int64_t>(a >> (52 - k)) - (static_cast<std::int64_t>(896) << k);
    } else {
        // float32 denormal range: truncating |x| to a multiple of 2^-149 is exact in double
        const auto m = static_cast<std::uint32_t>(std::fabs(x) * 0x1p149);
        mag = m >> (23 - k);
    }
    const auto idx = static_cast<std::int32_t>(mag);
    return (u >> 63) ? -idx : idx;
}

Histogram bin_values(const void* data, std::size_t n, FloatFormat format, int k) {
    if (k < 0 || k > kMaxMantissaBits) throw std::invalid_argument("k must be between 0 and 10");
    Accumulator acc(k);
    switch (format) {
        case FloatFormat::F32:
            acc.add_f32_bits(static_cast<const std::uint32_t*>(data), n);
            break;
        case FloatFormat::F64:
            acc.add_f64(static_cast<const double*>(data), n);
            break;
        case FloatFormat::F16:
        case FloatFormat::BF16: {
            const auto* src = static_cast<const std::uint16_t*>(data);
            std::array<std::uint32_t, kConvertBlock> block;
            for (std::size_t i = 0; i < n; i += kConvertBlock) {
                const std::size_t m = std::min(kConvertBlock, n - i);
                for (std::size_t j = 0; j < m; ++j) {
                    block[j] = format == FloatFormat::F16 ? half_to_float_bits(src[i + j])
                                                          : static_cast<std::uint32_t>(src[i + j]) << 16;
                }
                acc.add_f32_bits(block.data(), m);
            }
            break;
        }
    }
    return acc.finish();
}

}  // namespace stepwire
