// A stream's shared-memory segment (docs/segment.md): a file under /dev/shm that the producing process maps
// and a second process (the node's collector, or `stepwire sync`) reads once the producer has died. It holds
// the rings' records and cursors, a journal of what the drainer took out of the rings (scalar records and
// histograms, with a marker where each batch was sealed and under which sequence), and the series table.
// The drainer writes the journal; the sender retires a batch's part once it is acknowledged or spooled.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "encoder.hpp"
#include "ring.hpp"

namespace stepwire {

inline constexpr std::uint64_t kSegmentMagic = 0x31474553'57505453ULL;  // "STPWSEG1"
inline constexpr std::uint32_t kSegmentVersion = 1;
inline constexpr std::size_t kSegmentHeaderBytes = 4096;
inline constexpr std::size_t kSegmentMetaOffset = 1024;
inline constexpr std::size_t kSlotHeaderBytes = 256;
// Journal bytes kept free for seal markers, so that a batch can always be sealed while records wait for room.
inline constexpr std::size_t kJournalReserve = 4096;
inline constexpr std::size_t kJournalRecordsHeader = 24;

enum class JournalEntry : std::uint32_t { Records = 1, Seal = 2, Histogram = 3 };

// The fixed fields at the start of the header (all little-endian; the atomics are 8-byte aligned).
struct SegmentHeader {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t header_bytes;
    std::int64_t pid;
    std::uint64_t reserved0;
    std::atomic<std::uint64_t> heartbeat_ms;  // wall-clock ms, bumped by the drainer's loop
    std::uint32_t slots;
    std::uint32_t ring_capacity;
    std::uint64_t rings_offset;
    std::uint64_t slot_bytes;
    std::uint64_t journal_offset;
    std::uint64_t journal_bytes;
    std::uint64_t table_offset;
    std::uint64_t table_bytes;
    std::atomic<std::uint64_t> journal_write;     // logical byte offset one past the last published entry
    std::atomic<std::uint64_t> journal_retired;   // entries before this are acknowledged or spooled
    std::atomic<std::uint64_t> table_used;        // bytes of the series table published
    std::atomic<std::uint64_t> next_sequence;     // the sequence the next sealed batch will have
    std::atomic<std::uint64_t> retired_sequence;  // batches up to this one are retired
    std::atomic<std::uint32_t> state;             // 0 live, 1 finished (about to be removed), 2 broken
    std::uint32_t meta_bytes;                     // JSON at kSegmentMetaOffset
    std::uint64_t queue_offset;                   // binned histograms queued, not yet taken by the drainer
    std::uint64_t queue_bytes;
    std::atomic<std::uint64_t> queue_write;
    std::atomic<std::uint64_t> queue_taken;
    // The highest raw-values file id (docs/segment.md) whose histogram is queued, or was dropped and counted.
    std::atomic<std::uint64_t> raw_done;
};
static_assert(sizeof(SegmentHeader) <= kSegmentMetaOffset);

class Segment {
public:
    // Creates and maps the file at path (reserving its memory up front, so that a full /dev/shm fails here and
    // not as SIGBUS later); nullptr with *error set when that cannot be done.
    static std::unique_ptr<Segment> create(const std::string& path, unsigned slots, std::size_t ring_capacity,
                                           std::size_t journal_bytes, std::size_t table_bytes,
                                           std::size_t queue_bytes, std::string* error);
    ~Segment();
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;

    // A free ring slot's memory, or false when every slot is taken.
    bool claim_slot(RingMemory* mem, int* slot);

    // Journal (drainer thread only, except retire): room counts kJournalReserve as taken.
    std::size_t journal_room_records(std::size_t entries) const noexcept;
    std::size_t journal_room_bytes() const noexcept;
    void journal_records(int slot, std::uint64_t first, const Record* r, std::size_t n) noexcept;
    bool journal_seal(std::uint64_t sequence) noexcept;
    static std::size_t histogram_entry_bytes(const Histogram& h) noexcept;
    void journal_histogram(const HistogramRecord& h) noexcept;
    // The histogram queue (under the stream's lock): an entry per queued histogram, in order; false when full.
    // raw: the raw-values file the histogram was binned from (0: none), written into the entry.
    bool queue_histogram(const HistogramRecord& h, std::uint32_t raw = 0) noexcept;
    // Raw-values file raw is settled (its histogram queued above, or dropped and counted): under the stream's
    // lock, after queue_histogram, so that a survivor sees the id in a queue entry or here (or both).
    void settle_raw(std::uint32_t raw) noexcept;
    // The oldest queued entry (bytes long) was taken into a batch and journaled.
    void dequeue_histogram(std::size_t bytes) noexcept;
    std::uint64_t journal_write() const noexcept { return header_->journal_write.load(std::memory_order_relaxed); }
    void retire(std::uint64_t journal_offset, std::uint64_t sequence) noexcept;
    void set_next_sequence(std::uint64_t s) noexcept { header_->next_sequence.store(s, std::memory_order_release); }

    // Series table (under the stream's lock): false when it is full.
    bool define(std::uint32_t id, SeriesKind kind, const std::string& name) noexcept;

    void heartbeat(std::uint64_t ms) noexcept { header_->heartbeat_ms.store(ms, std::memory_order_relaxed); }
    bool set_meta(const std::string& json) noexcept;
    void set_state(std::uint32_t s) noexcept { header_->state.store(s, std::memory_order_release); }
    // Removes the file (the mapping stays valid until destruction); true if it was there.
    bool unlink() noexcept;

    const std::string& path() const noexcept { return path_; }
    std::size_t bytes() const noexcept { return bytes_; }
    std::size_t journal_bytes() const noexcept { return journal_bytes_; }
    unsigned slots() const noexcept { return slots_; }
    unsigned slots_used() const noexcept { return next_slot_.load(std::memory_order_relaxed); }

private:
    Segment() = default;
    void journal_put(const void* data, std::size_t n) noexcept;  // at the journal's write cursor (wrapping)
    // A histogram entry written at *cursor (advanced) of the byte ring at ring (size bytes).
    static void put_histogram(unsigned char* ring, std::size_t size, std::uint64_t* cursor, const HistogramRecord& r,
                              std::uint32_t raw) noexcept;

    std::string path_;
    int fd_ = -1;
    unsigned char* base_ = nullptr;
    std::size_t bytes_ = 0;
    SegmentHeader* header_ = nullptr;
    unsigned slots_ = 0;
    std::size_t ring_capacity_ = 0;
    unsigned char* journal_ = nullptr;
    std::size_t journal_bytes_ = 0;
    std::uint64_t pending_write_ = 0;  // where the entry being written goes (drainer thread)
    unsigned char* queue_ = nullptr;
    std::size_t queue_bytes_ = 0;
    unsigned char* table_ = nullptr;
    std::size_t table_bytes_ = 0;
    std::atomic<unsigned> next_slot_{0};
    bool unlinked_ = false;
};

}  // namespace stepwire
