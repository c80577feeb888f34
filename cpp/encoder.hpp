// Columnar batch layout: what the drainer seals and the sender ships (little-endian packed arrays).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "histogram.hpp"
#include "scheme.hpp"

namespace stepwire {

struct SeriesDef {
    std::uint32_t id;
    std::string name;
    SeriesKind kind;
};

// A histogram as logged: where it belongs plus its bins.
struct HistogramRecord {
    std::uint32_t series;
    std::int64_t step;
    double wall_time;
    Histogram hist;
    std::uint64_t index = 0;         // pushed before it on the stream (its key in the segment, segment.hpp)
    std::uint32_t queued_bytes = 0;  // its entry in the segment's histogram queue, 0 if none
};

// Scalars grouped by series (group i: group_series[i], group_lengths[i] points, in logged order),
// histograms as parallel columns with their buckets concatenated.
struct SealedBatch {
    std::uint64_t sequence = 0;
    std::vector<SeriesDef> defs;

    std::vector<std::uint32_t> group_series;
    std::vector<std::uint32_t> group_lengths;
    std::vector<std::int64_t> steps;
    std::vector<double> values;
    std::vector<double> wall_times;

    std::vector<std::uint32_t> hist_series;
    std::vector<std::int64_t> hist_steps;
    std::vector<double> hist_wall_times;
    std::vector<std::uint8_t> hist_k;
    std::vector<std::int64_t> hist_count;
    std::vector<double> hist_sum, hist_min, hist_max;
    std::vector<std::int64_t> hist_nan, hist_pos_inf, hist_neg_inf;
    std::vector<std::uint32_t> hist_lengths;   // buckets per histogram
    std::vector<std::int32_t> bucket_indices;  // concatenated
    std::vector<std::int64_t> bucket_counts;

    std::size_t point_count() const { return steps.size(); }
    std::size_t histogram_count() const { return hist_series.size(); }
};

// Builds a SealedBatch from drained records with a stable counting sort by series id.
class Encoder {
public:
    void add_histogram(HistogramRecord&& h);
    // records: everything drained since the last seal, in order.
    SealedBatch seal(const std::vector<Record>& records, std::vector<SeriesDef>&& defs, std::uint64_t sequence);

private:
    std::vector<HistogramRecord> hists_;
    std::vector<std::uint32_t> slot_of_series_;  // series id -> group slot + 1 for this batch (0 = none)
};

inline std::size_t histogram_bytes(const Histogram& h) { return 80 + h.indices.size() * 12; }

}  // namespace stepwire
