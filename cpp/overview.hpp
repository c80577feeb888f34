// Block extremes of scalar chunks: per block of consecutive points, its first and last step and wall time, the
// points holding its minimum and maximum value (NaN skipped; a block of NaN keeps its first point) and its count
// of NaN/±inf values. A chart bucket made of whole blocks has its extremes among its blocks' (see
// python/stepwire/store/overview.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace stepwire {

// Fields of one block row, in order; doubles are stored as their bit patterns.
constexpr std::size_t kBlockFields = 11;

struct BlockExtremes {
    std::vector<std::int64_t> rows;    // kBlockFields per block, blocks of chunk 0 first
    std::vector<std::int64_t> blocks;  // blocks per chunk; 0 for a chunk that was skipped
};

// For each chunk [starts[i], ends[i]) of at least min_points points whose steps and wall times never decrease:
// the rows of its blocks of `block` points (the last may be shorter). Pure C++: callers may drop the GIL.
BlockExtremes block_extremes(const std::int64_t* steps, const double* values, const double* walls,
                             const std::int64_t* starts, const std::int64_t* ends, std::size_t chunks,
                             std::size_t block, std::size_t min_points);

}  // namespace stepwire
