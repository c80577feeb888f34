// pybind11 bindings for everything that is not per-point; the per-point entry points live in hotpath.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bin_pool.hpp"
#include "drainer.hpp"
#include "histogram.hpp"
#include "hotpath.hpp"
#include "overview.hpp"
#include "scheme.hpp"

namespace py = pybind11;
using namespace stepwire;

namespace {

// Histograms binned off the caller's thread and held natively until they may be queued.
struct BinnedSet {
    std::vector<Histogram> hists;
};

template <typename T>
py::bytes column(const std::vector<T>& v) {
    return py::bytes(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
py::array_t<T> array(const std::vector<T>& v) {
    return py::array_t<T>(static_cast<py::ssize_t>(v.size()), v.data());
}

// Validates a buffer of floats and says how to read it.
FloatFormat buffer_format(const py::buffer_info& info, bool bfloat16) {
    std::string f = info.format;
    if (!f.empty() && (f[0] == '<' || f[0] == '=' || f[0] == '@')) f = f.substr(1);
    FloatFormat fmt;
    if (bfloat16 && (f == "H" || f == "h")) {
        fmt = FloatFormat::BF16;
    } else if (f == "f") {
        fmt = FloatFormat::F32;
    } else if (f == "d") {
        fmt = FloatFormat::F64;
    } else if (f == "e") {
        fmt = FloatFormat::F16;
    } else {
        throw py::type_error("histogram values must be float16, bfloat16, float32 or float64, got buffer format '" +
                             info.format + "'");
    }
    py::ssize_t expected = info.itemsize;
    for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
        if (info.shape[static_cast<std::size_t>(d)] > 1 && info.strides[static_cast<std::size_t>(d)] != expected) {
            throw py::value_error("histogram values must be C-contiguous");
        }
        expected *= info.shape[static_cast<std::size_t>(d)];
    }
    return fmt;
}

// Asked once: hardware_concurrency() reads /sys on every call (microseconds, more than binning 16 values).
unsigned default_threads() {
    static const unsigned n = std::max(1u, std::thread::hardware_concurrency());
    return n;
}

// Binds several buffers at once (GIL released, several threads); the buffers stay referenced meanwhile.
std::vector<Histogram> bin_buffers(const py::list& values, const py::list& bfloat16, int k, unsigned threads) {
    if (values.size() != bfloat16.size()) throw py::value_error("values and bfloat16 differ in length");
    std::vector<py::buffer_info> infos;
    std::vector<BinInput> inputs;
    for (std::size_t i = 0; i < values.size(); ++i) {
        infos.push_back(py::reinterpret_borrow<py::buffer>(values[i]).request());
        const py::buffer_info& info = infos.back();
        inputs.push_back({info.ptr, static_cast<std::size_t>(info.size), buffer_format(info, bfloat16[i].cast<bool>())});
    }
    if (k < 0 || k > kMaxMantissaBits) throw py::value_error("k must be between 0 and 10");
    py::gil_scoped_release release;
    return bin_many(inputs, k, threads == 0 ? default_threads() : threads);
}

// The keys of the dicts below, interned once: decoding and hashing 11 key strings per histogram cost more than
// binning a small tensor. Never released, on purpose: a static destructor would run after the interpreter.
struct DictKeys {
    py::handle count, sum, sumsq, min, max, nan, pos_inf, neg_inf, k, indices, counts;
};

const DictKeys& dict_keys() {
    static const DictKeys keys = [] {
        auto key = [](const char* s) { return py::handle(PyUnicode_InternFromString(s)); };
        return DictKeys{key("count"), key("sum"),     key("sumsq"),   key("min"), key("max"),    key("nan"),
                        key("pos_inf"), key("neg_inf"), key("k"), key("indices"), key("counts")};
    }();
    return keys;
}

py::dict stats_dict(const Histogram& h) {
    const DictKeys& key = dict_keys();
    py::dict stats;
    stats[key.count] = h.count;
    stats[key.sum] = h.sum;
    stats[key.sumsq] = h.sumsq;
    stats[key.min] = h.min;
    stats[key.max] = h.max;
    stats[key.nan] = h.nan;
    stats[key.pos_inf] = h.pos_inf;
    stats[key.neg_inf] = h.neg_inf;
    return stats;
}

Histogram bin_buffer(const py::buffer& values, int k, bool bfloat16) {
    const py::buffer_info info = values.request();
    const FloatFormat fmt = buffer_format(info, bfloat16);
    const auto n = static_cast<std::size_t>(info.size);
    py::gil_scoped_release release;
    return std::move(bin_many({BinInput{info.ptr, n, fmt}}, k, default_threads()).front());  // large: all cores
}

py::dict histogram_dict(const Histogram& h) {
    const DictKeys& key = dict_keys();
    py::dict d = stats_dict(h);
    d[key.k] = h.k;
    d[key.indices] = array(h.indices);
    d[key.counts] = array(h.counts);
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "stepwire's native core: per-thread rings, the drainer thread, histogram binning, batch encoding.";
    m.attr("DEFAULT_K") = kDefaultMantissaBits;
    m.attr("MAX_K") = kMaxMantissaBits;
    m.attr("MAX_NAME_BYTES") = kMaxNameBytes;
    m.attr("MAX_STEP") = kMaxStep;
    m.attr("KIND_SCALAR") = static_cast<int>(SeriesKind::Scalar);
    m.attr("KIND_HISTOGRAM") = static_cast<int>(SeriesKind::Histogram);
    m.attr("SEGMENT_MAGIC") = kSegmentMagic;
    m.attr("SEGMENT_VERSION") = kSegmentVersion;

    // SCHEME: the constants of the histogram bucket scheme, from scheme.hpp, so that other implementations
    // (the torch device path) compute the same integers without copying literals:
    //   mantissa_bits            23: float32 mantissa bits; bucket = sign(x) * (bits(|x|) >> (mantissa_bits - k))
    //   float64_mantissa_bits    52: float64 mantissa bits
    //   exponent_bias            127: float32's exponent bias
    //   exponent_rebase          896: float64 biased exponent minus this = float32 biased exponent (1023 - 127)
    //   first_normal_exponent    897: first float64 biased exponent that is float32-normal (2^-126)
    //   finite_exponents         255: float32 biased exponents of finite values (0..254); magnitudes from
    //                            finite_exponents << k on are Inf/NaN for float32 bits
    //   beyond_float32_exponent  1151: first float64 biased exponent beyond float32's range (2^128); finite
    //                            doubles there keep buckets of magnitude >= finite_exponents << k
    //   denormal_scale_log2      149: a float32 denormal |x| has the bit pattern |x| * 2^149
    //   smallest_normal_log2     -126: the smallest float32 normal is 2^-126
    //   default_k, max_k         3 and 10: mantissa bits kept by default and at most
    {
        py::dict scheme;
        scheme["mantissa_bits"] = kFloat32MantissaBits;
        scheme["float64_mantissa_bits"] = kFloat64MantissaBits;
        scheme["exponent_bias"] = kFloat32ExponentBias;
        scheme["exponent_rebase"] = kExponentRebase;
        scheme["first_normal_exponent"] = kFirstFloat32NormalExponent;
        scheme["finite_exponents"] = kFiniteFloat32Exponents;
        scheme["beyond_float32_exponent"] = kBeyondFloat32Exponent;
        scheme["denormal_scale_log2"] = kDenormalScaleLog2;
        scheme["smallest_normal_log2"] = kSmallestNormalLog2;
        scheme["default_k"] = kDefaultMantissaBits;
        scheme["max_k"] = kMaxMantissaBits;
        m.attr("SCHEME") = scheme;
    }

    m.def(
        "bin_values",
        [](const py::buffer& values, int k, bool bfloat16) { return histogram_dict(bin_buffer(values, k, bfloat16)); },
        py::arg("values"), py::arg("k") = kDefaultMantissaBits, py::arg("bfloat16") = false,
        "Bins a contiguous float buffer (GIL released); returns k, indices, counts and exact statistics.");
    m.def(
        "bin_many",
        [](const py::list& values, const py::list& bfloat16, int k, unsigned threads) {
            py::list out;
            for (const Histogram& h : bin_buffers(values, bfloat16, k, threads)) out.append(histogram_dict(h));
            return out;
        },
        py::arg("values"), py::arg("bfloat16"), py::arg("k") = kDefaultMantissaBits, py::arg("threads") = 0,
        "Bins several buffers on several threads (0: one per core), GIL released; a list of bin_values results.");
    py::class_<BinnedSet>(m, "BinnedSet", "Histograms binned by bin_many_held, waiting to be queued by a Stream.")
        .def("__len__", [](const BinnedSet& b) { return b.hists.size(); })
        .def("stats", [](const BinnedSet& b) {
            py::list out;
            for (const Histogram& h : b.hists) out.append(stats_dict(h));
            return out;
        }, "The statistics of each histogram (the keys of bin_values without k, indices and counts).");
    m.def(
        "bin_many_held",
        [](const py::list& values, const py::list& bfloat16, int k, unsigned threads) {
            return BinnedSet{bin_buffers(values, bfloat16, k, threads)};
        },
        py::arg("values"), py::arg("bfloat16"), py::arg("k") = kDefaultMantissaBits, py::arg("threads") = 0,
        "bin_many keeping the histograms in native memory for Stream.push_binned_set (no Python objects per bucket).");
    m.def(
        "block_extremes",
        [](const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& steps,
           const py::array_t<double, py::array::c_style | py::array::forcecast>& values,
           const py::array_t<double, py::array::c_style | py::array::forcecast>& walls,
           const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& starts,
           const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& ends, std::size_t block,
           std::size_t min_points) {
            const auto n = steps.size();
            if (values.size() != n || walls.size() != n) throw py::value_error("steps, values and walls differ in length");
            if (starts.size() != ends.size()) throw py::value_error("starts and ends differ in length");
            if (block == 0) throw py::value_error("block must be positive");
            for (py::ssize_t i = 0; i < starts.size(); ++i) {
                if (starts.data()[i] < 0 || starts.data()[i] > ends.data()[i] || ends.data()[i] > n) {
                    throw py::value_error("chunk bounds out of range");
                }
            }
            BlockExtremes out;
            {
                py::gil_scoped_release release;
                out = block_extremes(steps.data(), values.data(), walls.data(), starts.data(), ends.data(),
                                     static_cast<std::size_t>(starts.size()), block, min_points);
            }
            py::array_t<std::int64_t> rows = array(out.rows);
            return py::make_tuple(rows.reshape({static_cast<py::ssize_t>(out.rows.size() / kBlockFields),
                                                static_cast<py::ssize_t>(kBlockFields)}),
                                  array(out.blocks));
        },
        py::arg("steps"), py::arg("values"), py::arg("walls"), py::arg("starts"), py::arg("ends"), py::arg("block"),
        py::arg("min_points"),
        "Block extremes of the chunks [starts[i], ends[i]) of at least min_points points whose steps and wall times "
        "ascend (GIL released): (rows of 11 int64 per block, blocks per chunk; 0 for a chunk left out).");
    m.def("bucket_index", &bucket_index, py::arg("x"), py::arg("k") = kDefaultMantissaBits,
          "Bucket index of one value in the log-linear scheme.");
    m.def(
        "bucket_indices",
        [](const py::array_t<double, py::array::c_style | py::array::forcecast>& values, int k) {
            if (k < 0 || k > kMaxMantissaBits) throw py::value_error("k must be between 0 and 10");
            const double* x = values.data();
            const auto n = static_cast<std::size_t>(values.size());
            for (std::size_t i = 0; i < n; ++i) {
                if (!std::isfinite(x[i])) throw py::value_error("bucket_indices takes finite values only");
            }
            py::array_t<std::int32_t> out(std::vector<py::ssize_t>(values.shape(), values.shape() + values.ndim()));
            std::int32_t* idx = out.mutable_data();
            {
                py::gil_scoped_release release;
                for (std::size_t i = 0; i < n; ++i) idx[i] = bucket_index(x[i], k);
            }
            return out;
        },
        py::arg("values"), py::arg("k") = kDefaultMantissaBits,
        "Bucket index of each finite value (as float64; same shape, int32), by the rule of bucket_index.");

    m.def("pool_workers", &pool_workers, "Workers of the binning pool started in this process (0 before first use).");
    m.def(
        "_pool_selftest",
        [](std::size_t n, unsigned threads, long long fail_at, unsigned sleep_us) {
            // Runs n tasks through the binning pool (GIL released): each sleeps sleep_us and marks itself;
            // task fail_at throws std::runtime_error. Returns (how often each task ran, threads that ran some).
            std::vector<std::atomic<int>> runs(n);
            std::mutex mutex;
            std::set<std::thread::id> ids;
            {
                py::gil_scoped_release release;
                parallel_for(n, threads, [&](std::size_t t) {
                    if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
                    {
                        std::lock_guard<std::mutex> lock(mutex);
                        ids.insert(std::this_thread::get_id());
                    }
                    runs[t].fetch_add(1);
                    if (static_cast<long long>(t) == fail_at) {
                        throw std::runtime_error("task " + std::to_string(t) + " failed");
                    }
                });
            }
            std::vector<int> out(n);
            for (std::size_t i = 0; i < n; ++i) out[i] = runs[i].load();
            return py::make_tuple(array(out), ids.size());
        },
        py::arg("n"), py::arg("threads"), py::arg("fail_at") = -1, py::arg("sleep_us") = 0,
        "Test hook: n tasks through the binning pool; (runs per task, threads that ran tasks).");

    py::class_<SealedBatch>(m, "SealedBatch", "A sealed columnar batch, ready to be compressed and sent.")
        .def_readonly("sequence", &SealedBatch::sequence)
        .def_property_readonly("point_count", &SealedBatch::point_count)
        .def_property_readonly("histogram_count", &SealedBatch::histogram_count)
        .def_property_readonly("defs",
                               [](const SealedBatch& b) {
                                   py::list out;
                                   for (const auto& d : b.defs) {
                                       out.append(py::make_tuple(d.id, d.name, static_cast<int>(d.kind)));
                                   }
                                   return out;
                               })
        .def("scalar_columns",
             [](const SealedBatch& b) {
                 py::dict d;
                 d["series_ids"] = column(b.group_series);
                 d["group_lengths"] = column(b.group_lengths);
                 d["steps"] = column(b.steps);
                 d["values"] = column(b.values);
                 d["wall_times"] = column(b.wall_times);
                 return d;
             })
        .def("histogram_columns", [](const SealedBatch& b) {
            py::dict d;
            d["series_ids"] = column(b.hist_series);
            d["steps"] = column(b.hist_steps);
            d["wall_times"] = column(b.hist_wall_times);
            d["k"] = column(b.hist_k);
            d["count"] = column(b.hist_count);
            d["sum"] = column(b.hist_sum);
            d["min"] = column(b.hist_min);
            d["max"] = column(b.hist_max);
            d["nan"] = column(b.hist_nan);
            d["pos_inf"] = column(b.hist_pos_inf);
            d["neg_inf"] = column(b.hist_neg_inf);
            d["bucket_lengths"] = column(b.hist_lengths);
            d["bucket_indices"] = column(b.bucket_indices);
            d["bucket_counts"] = column(b.bucket_counts);
            return d;
        });

    py::class_<Stream, std::shared_ptr<Stream>>(m, "Stream", "Rings, drainer thread and sealed-batch queue of a run.")
        .def(py::init([](std::size_t ring_capacity, bool drop_when_full, std::size_t batch_bytes,
                         double flush_interval, std::size_t max_sealed, std::size_t max_batch_bytes, bool discard,
                         std::size_t max_sealed_bytes, std::size_t max_histogram_bytes, double block_timeout,
                         std::string shm_path, unsigned shm_slots, std::size_t journal_bytes) {
                 if (batch_bytes < 1024) throw py::value_error("batch_bytes must be at least 1024");
                 if (max_batch_bytes < batch_bytes) throw py::value_error("max_batch_bytes must be >= batch_bytes");
                 if (!(flush_interval > 0)) throw py::value_error("flush_interval must be > 0");
                 if (!(block_timeout > 0)) throw py::value_error("block_timeout must be > 0");
                 StreamConfig cfg;
                 cfg.ring_capacity = ring_capacity;
                 cfg.drop_when_full = drop_when_full;
                 cfg.batch_bytes = batch_bytes;
                 cfg.flush_interval_s = flush_interval;
                 cfg.max_sealed = max_sealed;
                 cfg.max_batch_bytes = max_batch_bytes;
                 cfg.max_sealed_bytes = max_sealed_bytes;
                 cfg.max_pending_histogram_bytes = max_histogram_bytes;
                 cfg.block_timeout_s = block_timeout;
                 cfg.discard = discard;
                 cfg.shm_path = std::move(shm_path);
                 cfg.shm_slots = shm_slots;
                 cfg.journal_bytes = journal_bytes;
                 return std::make_shared<Stream>(cfg);
             }),
             py::arg("ring_capacity") = 1 << 16, py::arg("drop_when_full") = false, py::arg("batch_bytes") = 1 << 20,
             py::arg("flush_interval") = 0.1, py::arg("max_sealed") = 32, py::arg("max_batch_bytes") = 16u << 20,
             py::arg("discard") = false, py::arg("max_sealed_bytes") = StreamConfig{}.max_sealed_bytes,
             py::arg("max_histogram_bytes") = StreamConfig{}.max_pending_histogram_bytes,
             py::arg("block_timeout") = StreamConfig{}.block_timeout_s, py::arg("shm_path") = "",
             py::arg("shm_slots") = StreamConfig{}.shm_slots, py::arg("journal_bytes") = 0)
        .def(
            "define", [](Stream& s, std::string name, int kind) { return s.define(std::move(name), SeriesKind(kind)); },
            py::arg("name"), py::arg("kind"))
        .def(
            "push_histogram",
            [](Stream& s, std::uint32_t series, std::int64_t step, const py::buffer& values, int k,
               bool bfloat16) -> py::object {
                Histogram h = bin_buffer(values, k, bfloat16);
                py::dict stats = stats_dict(h);  // so callers need no second pass for norms or means
                bool accepted;
                {
                    py::gil_scoped_release release;
                    accepted = s.push_histogram(HistogramRecord{series, step, wall_clock_now(), std::move(h)});
                }
                return accepted ? py::object(stats) : py::object(py::none());
            },
            py::arg("series"), py::arg("step"), py::arg("values"), py::arg("k") = kDefaultMantissaBits,
            py::arg("bfloat16") = false)
        .def(
            "push_histograms",
            [](Stream& s, const std::vector<std::uint32_t>& series, std::int64_t step, const py::list& values,
               const py::list& bfloat16, int k) {
                if (series.size() != values.size()) throw py::value_error("series and values differ in length");
                std::vector<Histogram> hists = bin_buffers(values, bfloat16, k, 0);
                py::list out;
                for (std::size_t i = 0; i < hists.size(); ++i) {
                    py::dict stats = stats_dict(hists[i]);
                    bool accepted;
                    {
                        py::gil_scoped_release release;
                        accepted = s.push_histogram(HistogramRecord{series[i], step, wall_clock_now(), std::move(hists[i])});
                    }
                    out.append(accepted ? py::object(stats) : py::object(py::none()));
                }
                return out;
            },
            py::arg("series"), py::arg("step"), py::arg("values"), py::arg("bfloat16"), py::arg("k") = kDefaultMantissaBits,
            "Bins several arrays on all cores (GIL released) and queues their histograms; their statistics.")
        .def(
            "push_binned",
            [](Stream& s, std::uint32_t series, std::int64_t step, int k, const py::array_t<std::int32_t>& indices,
               const py::array_t<std::int64_t>& counts, std::int64_t count, double sum, double min, double max,
               std::int64_t nan, std::int64_t pos_inf, std::int64_t neg_inf) {
                if (indices.size() != counts.size()) throw py::value_error("indices and counts differ in length");
                if (k < 0 || k > kMaxMantissaBits) throw py::value_error("k must be between 0 and 10");
                Histogram h;
                h.k = k;
                h.indices.assign(indices.data(), indices.data() + indices.size());
                h.counts.assign(counts.data(), counts.data() + counts.size());
                h.count = count;
                h.sum = sum;
                h.min = min;
                h.max = max;
                h.nan = nan;
                h.pos_inf = pos_inf;
                h.neg_inf = neg_inf;
                py::gil_scoped_release release;
                return s.push_histogram(HistogramRecord{series, step, wall_clock_now(), std::move(h)});
            },
            py::arg("series"), py::arg("step"), py::arg("k"), py::arg("indices"), py::arg("counts"), py::arg("count"),
            py::arg("sum"), py::arg("min"), py::arg("max"), py::arg("nan"), py::arg("pos_inf"), py::arg("neg_inf"),
            "Queues a histogram binned elsewhere (e.g. on a GPU) in the same scheme.")
        .def(
            "push_binned_set",
            [](Stream& s, const std::vector<std::uint32_t>& series, std::int64_t step, BinnedSet& binned,
               std::uint32_t raw, double wall_time) {
                if (series.size() != binned.hists.size()) throw py::value_error("series and histograms differ in length");
                if (raw != 0 && series.size() != 1) throw py::value_error("a raw-values file holds one histogram");
                std::size_t accepted = 0;
                {
                    py::gil_scoped_release release;  // once for the whole set
                    const double wall = wall_time > 0 ? wall_time : wall_clock_now();
                    for (std::size_t i = 0; i < series.size(); ++i) {
                        accepted += s.push_histogram(
                            HistogramRecord{series[i], step, wall, std::move(binned.hists[i])}, raw) ? 1 : 0;
                    }
                }
                binned.hists.clear();
                return accepted;
            },
            py::arg("series"), py::arg("step"), py::arg("binned"), py::arg("raw") = 0, py::arg("wall_time") = 0.0,
            "Queues a BinnedSet (which it empties) at step; returns how many histograms were accepted. raw: the "
            "segment's raw-values file its one histogram was binned from, settled with it; wall_time: of the "
            "logging call (0: now).")
        .def("next_batch", &Stream::next_batch, py::arg("timeout"), py::call_guard<py::gil_scoped_release>())
        .def("flush", &Stream::flush, py::arg("timeout") = 1e9, py::call_guard<py::gil_scoped_release>())
        .def("close", &Stream::close, py::call_guard<py::gil_scoped_release>())
        .def("exhausted", &Stream::exhausted)
        .def("retire", &Stream::retire, py::arg("sequence"), py::call_guard<py::gil_scoped_release>(),
             "Batches up to sequence are acknowledged, refused, spooled or lost: their journal room is free again.")
        .def("set_segment_meta", &Stream::set_segment_meta, py::arg("json"),
             "Writes the segment's JSON metadata; False without a segment (or when it is too long).")
        .def("release_segment", &Stream::release_segment, py::call_guard<py::gil_scoped_release>(),
             "Marks the segment finished and removes its file; True if it was removed.")
        .def("segment_info", [](Stream& s) {
            const SegmentInfo i = s.segment_info();
            py::dict d;
            d["survives_crash"] = i.survives_crash;
            d["reason"] = i.reason;
            d["path"] = i.path;
            d["bytes"] = i.bytes;
            d["journal_bytes"] = i.journal_bytes;
            d["slots"] = i.slots;
            d["unsafe_rings"] = i.unsafe_rings;
            d["unsafe_series"] = i.unsafe_series;
            d["unsafe_histograms"] = i.unsafe_histograms;
            return d;
        }, "Where the stream's records outlive the process (its shared-memory segment), or why they do not.")
        .def("stats", [](Stream& s) {
            const StreamStats st = s.stats();
            py::dict d;
            d["logged"] = st.logged;
            d["dropped"] = st.dropped;
            d["timed_out"] = st.timed_out;
            d["blocked"] = st.blocked;
            d["held_bytes"] = st.held_bytes;
            d["sealed_batches"] = st.sealed_batches;
            d["sealed_items"] = st.sealed_items;
            return d;
        });

    if (add_producer_type(m.ptr()) < 0) throw py::error_already_set();
}
