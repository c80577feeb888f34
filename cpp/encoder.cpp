#include "encoder.hpp"

#include <utility>

namespace stepwire {

void Encoder::add_histogram(HistogramRecord&& h) { hists_.push_back(std::move(h)); }

SealedBatch Encoder::seal(const std::vector<Record>& records, std::vector<SeriesDef>&& defs, std::uint64_t sequence) {
    SealedBatch b;
    b.sequence = sequence;
    b.defs = std::move(defs);

    // Groups in order of first appearance; each group keeps the logged order of its points.
    std::vector<std::uint32_t> group_start;
    for (const Record& r : records) {
        if (r.series >= slot_of_series_.size()) slot_of_series_.resize(r.series + 1, 0);
        std::uint32_t& slot = slot_of_series_[r.series];
        if (slot == 0) {
            b.group_series.push_back(r.series);
            b.group_lengths.push_back(0);
            slot = static_cast<std::uint32_t>(b.group_series.size());
        }
        ++b.group_lengths[slot - 1];
    }
    group_start.resize(b.group_series.size());
    std::uint32_t offset = 0;
    for (std::size_t g = 0; g < b.group_series.size(); ++g) {
        group_start[g] = offset;
        offset += b.group_lengths[g];
    }
    const std::size_t n = records.size();
    b.steps.resize(n);
    b.values.resize(n);
    b.wall_times.resize(n);
    for (const Record& r : records) {
        const std::uint32_t pos = group_start[slot_of_series_[r.series] - 1]++;
        b.steps[pos] = r.step;
        b.values[pos] = r.value;
        b.wall_times[pos] = r.wall_time;
    }
    for (std::uint32_t s : b.group_series) slot_of_series_[s] = 0;

    for (HistogramRecord& h : hists_) {
        b.hist_series.push_back(h.series);
        b.hist_steps.push_back(h.step);
        b.hist_wall_times.push_back(h.wall_time);
        b.hist_k.push_back(static_cast<std::uint8_t>(h.hist.k));
        b.hist_count.push_back(h.hist.count);
        b.hist_sum.push_back(h.hist.sum);
        b.hist_min.push_back(h.hist.min);
        b.hist_max.push_back(h.hist.max);
        b.hist_nan.push_back(h.hist.nan);
        b.hist_pos_inf.push_back(h.hist.pos_inf);
        b.hist_neg_inf.push_back(h.hist.neg_inf);
        b.hist_lengths.push_back(static_cast<std::uint32_t>(h.hist.indices.size()));
        b.bucket_indices.insert(b.bucket_indices.end(), h.hist.indices.begin(), h.hist.indices.end());
        b.bucket_counts.insert(b.bucket_counts.end(), h.hist.counts.begin(), h.hist.counts.end());
    }
    hists_.clear();
    return b;
}

}  // namespace stepwire
