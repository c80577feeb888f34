#include "overview.hpp"

#include <bit>
#include <cmath>

namespace stepwire {
namespace {

bool ascending(const std::int64_t* steps, const double* walls, std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin + 1; i < end; ++i) {
        if (steps[i] < steps[i - 1] || walls[i] < walls[i - 1]) return false;
    }
    return true;
}

}  // namespace

BlockExtremes block_extremes(const std::int64_t* steps, const double* values, const double* walls,
                             const std::int64_t* starts, const std::int64_t* ends, std::size_t chunks,
                             std::size_t block, std::size_t min_points) {
    BlockExtremes out;
    out.blocks.assign(chunks, 0);
    const auto width = static_cast<std::int64_t>(block);
    for (std::size_t c = 0; c < chunks; ++c) {
        const std::int64_t begin = starts[c], end = ends[c];
        if (end - begin < static_cast<std::int64_t>(min_points) || end <= begin || !ascending(steps, walls, begin, end)) {
            continue;
        }
        for (std::int64_t b = begin; b < end; b += width) {
            const std::int64_t e = std::min(end, b + width);
            std::int64_t imin = -1, imax = -1, nonfinite = 0;
            for (std::int64_t i = b; i < e; ++i) {
                const double v = values[i];
                if (!std::isfinite(v)) ++nonfinite;
                if (std::isnan(v)) continue;
                if (imin < 0 || v < values[imin]) imin = i;
                if (imax < 0 || v > values[imax]) imax = i;
            }
            if (imin < 0) imin = imax = b;  // all NaN: the first point, so the gap shows
            const std::int64_t last = e - 1;
            const std::int64_t row[kBlockFields] = {
                steps[b],    std::bit_cast<std::int64_t>(walls[b]),
                steps[last], std::bit_cast<std::int64_t>(walls[last]),
                steps[imin], std::bit_cast<std::int64_t>(values[imin]), std::bit_cast<std::int64_t>(walls[imin]),
                steps[imax], std::bit_cast<std::int64_t>(values[imax]), std::bit_cast<std::int64_t>(walls[imax]),
                nonfinite};
            out.rows.insert(out.rows.end(), row, row + kBlockFields);
            ++out.blocks[c];
        }
    }
    return out;
}

}  // namespace stepwire
