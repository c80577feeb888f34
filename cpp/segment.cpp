#include "segment.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <new>

namespace stepwire {
namespace {

constexpr std::size_t align8(std::size_t n) { return (n + 7) & ~static_cast<std::size_t>(7); }
constexpr std::size_t align_page(std::size_t n) { return (n + 4095) & ~static_cast<std::size_t>(4095); }

static_assert(offsetof(SegmentHeader, heartbeat_ms) == 32);
static_assert(offsetof(SegmentHeader, journal_write) == 96);
static_assert(offsetof(SegmentHeader, state) == 136);
static_assert(offsetof(SegmentHeader, meta_bytes) == 140);
static_assert(offsetof(SegmentHeader, raw_done) == 176);

// The fixed part of a histogram entry's payload (docs/segment.md).
struct HistogramFixed {
    std::uint64_t index;
    std::uint32_t series;
    std::uint8_t k;
    std::uint8_t pad[3];
    std::int64_t step;
    double wall_time;
    std::int64_t count;
    double sum, min, max;
    std::int64_t nan, pos_inf, neg_inf;
    std::uint32_t buckets;
    std::uint32_t raw;  // the raw-values file it was binned from, 0 if none
};
static_assert(sizeof(HistogramFixed) == 96);

// Copies n bytes to the byte ring (size bytes) at logical offset *cursor, wrapping; advances *cursor.
void ring_put(unsigned char* ring, std::size_t size, std::uint64_t* cursor, const void* data, std::size_t n) noexcept {
    const auto* src = static_cast<const unsigned char*>(data);
    while (n > 0) {
        const std::size_t at = static_cast<std::size_t>(*cursor % size);
        const std::size_t piece = std::min(n, size - at);
        std::memcpy(ring + at, src, piece);
        src += piece;
        n -= piece;
        *cursor += piece;
    }
}

}  // namespace

std::unique_ptr<Segment> Segment::create(const std::string& path, unsigned slots, std::size_t ring_capacity,
                                         std::size_t journal_bytes, std::size_t table_bytes,
                                         std::size_t queue_bytes, std::string* error) {
    std::unique_ptr<Segment> s(new Segment());
    s->path_ = path;
    s->slots_ = slots;
    s->ring_capacity_ = ring_capacity;
    s->journal_bytes_ = align_page(journal_bytes);
    s->table_bytes_ = align_page(table_bytes);
    const std::size_t slot_bytes = align_page(kSlotHeaderBytes + ring_capacity * sizeof(Record));
    const std::size_t rings_offset = kSegmentHeaderBytes;
    const std::size_t journal_offset = rings_offset + slots * slot_bytes;
    const std::size_t table_offset = journal_offset + s->journal_bytes_;
    s->queue_bytes_ = align_page(queue_bytes);
    const std::size_t queue_offset = table_offset + s->table_bytes_;
    s->bytes_ = queue_offset + s->queue_bytes_;

    s->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (s->fd_ < 0) {
        *error = "cannot create " + path + ": " + std::strerror(errno);
        return nullptr;
    }
    // posix_fallocate reserves the pages now: a /dev/shm without room fails here instead of killing the
    // process with SIGBUS at its first write into a page that cannot be had.
    const int rc = ::posix_fallocate(s->fd_, 0, static_cast<off_t>(s->bytes_));
    if (rc != 0) {
        *error = "cannot reserve " + std::to_string(s->bytes_ >> 20) + " MiB in " + path + ": " + std::strerror(rc);
        ::unlink(path.c_str());
        return nullptr;
    }
    void* p = ::mmap(nullptr, s->bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd_, 0);
    if (p == MAP_FAILED) {
        *error = "cannot map " + path + ": " + std::strerror(errno);
        ::unlink(path.c_str());
        return nullptr;
    }
    s->base_ = static_cast<unsigned char*>(p);
    s->header_ = new (s->base_) SegmentHeader{};
    SegmentHeader& h = *s->header_;
    h.version = kSegmentVersion;
    h.header_bytes = kSegmentHeaderBytes;
    h.pid = ::getpid();
    h.slots = slots;
    h.ring_capacity = static_cast<std::uint32_t>(ring_capacity);
    h.rings_offset = rings_offset;
    h.slot_bytes = slot_bytes;
    h.journal_offset = journal_offset;
    h.journal_bytes = s->journal_bytes_;
    h.table_offset = table_offset;
    h.table_bytes = s->table_bytes_;
    h.next_sequence.store(1);
    h.queue_offset = queue_offset;
    h.queue_bytes = s->queue_bytes_;
    s->queue_ = s->base_ + queue_offset;
    s->journal_ = s->base_ + journal_offset;
    s->table_ = s->base_ + table_offset;
    for (unsigned i = 0; i < slots; ++i) {
        unsigned char* slot = s->base_ + rings_offset + i * slot_bytes;
        new (slot) std::atomic<std::uint64_t>(0);       // head
        new (slot + 64) std::atomic<std::uint64_t>(0);  // tail
    }
    std::atomic_thread_fence(std::memory_order_release);
    std::atomic_ref<std::uint64_t>(h.magic).store(kSegmentMagic, std::memory_order_release);
    return s;
}

Segment::~Segment() {
    if (base_ != nullptr) ::munmap(base_, bytes_);
    if (fd_ >= 0) ::close(fd_);
}

bool Segment::claim_slot(RingMemory* mem, int* slot) {
    const unsigned i = next_slot_.fetch_add(1);
    if (i >= slots_) return false;
    unsigned char* p = base_ + header_->rings_offset + i * header_->slot_bytes;
    mem->head = std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(p));
    mem->tail = std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(p + 64));
    mem->records = reinterpret_cast<Record*>(p + kSlotHeaderBytes);
    std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(p + 128)).store(1, std::memory_order_release);
    *slot = static_cast<int>(i);
    return true;
}

std::size_t Segment::journal_room_bytes() const noexcept {
    const std::uint64_t used = journal_write() - header_->journal_retired.load(std::memory_order_acquire);
    const std::size_t free = journal_bytes_ - static_cast<std::size_t>(used);
    return free > kJournalReserve ? free - kJournalReserve : 0;
}

std::size_t Segment::journal_room_records(std::size_t entries) const noexcept {
    const std::size_t room = journal_room_bytes();
    const std::size_t overhead = entries * kJournalRecordsHeader;
    return room > overhead ? (room - overhead) / sizeof(Record) : 0;
}

void Segment::journal_put(const void* data, std::size_t n) noexcept {
    ring_put(journal_, journal_bytes_, &pending_write_, data, n);
}

void Segment::journal_records(int slot, std::uint64_t first, const Record* r, std::size_t n) noexcept {
    if (n == 0) return;
    pending_write_ = journal_write();
    const std::uint32_t head[4] = {static_cast<std::uint32_t>(JournalEntry::Records), static_cast<std::uint32_t>(n),
                                   static_cast<std::uint32_t>(slot), 0};
    journal_put(head, sizeof(head));
    journal_put(&first, sizeof(first));
    journal_put(r, n * sizeof(Record));
    header_->journal_write.store(pending_write_, std::memory_order_release);
}

bool Segment::journal_seal(std::uint64_t sequence) noexcept {
    const std::uint64_t used = journal_write() - header_->journal_retired.load(std::memory_order_acquire);
    if (journal_bytes_ - used < 16) return false;
    pending_write_ = journal_write();
    const std::uint32_t head[2] = {static_cast<std::uint32_t>(JournalEntry::Seal), 0};
    journal_put(head, sizeof(head));
    journal_put(&sequence, sizeof(sequence));
    header_->journal_write.store(pending_write_, std::memory_order_release);
    return true;
}

std::size_t Segment::histogram_entry_bytes(const Histogram& h) noexcept {
    return 8 + sizeof(HistogramFixed) + align8(h.indices.size() * 4) + h.counts.size() * 8;
}

void Segment::put_histogram(unsigned char* ring, std::size_t size, std::uint64_t* cursor,
                            const HistogramRecord& r, std::uint32_t raw) noexcept {
    const Histogram& h = r.hist;
    const std::size_t payload = histogram_entry_bytes(h) - 8;
    const std::uint32_t head[2] = {static_cast<std::uint32_t>(JournalEntry::Histogram),
                                   static_cast<std::uint32_t>(payload)};
    ring_put(ring, size, cursor, head, sizeof(head));
    HistogramFixed f{};
    f.index = r.index;
    f.series = r.series;
    f.k = static_cast<std::uint8_t>(h.k);
    f.step = r.step;
    f.wall_time = r.wall_time;
    f.count = h.count;
    f.sum = h.sum;
    f.min = h.min;
    f.max = h.max;
    f.nan = h.nan;
    f.pos_inf = h.pos_inf;
    f.neg_inf = h.neg_inf;
    f.buckets = static_cast<std::uint32_t>(h.indices.size());
    f.raw = raw;
    ring_put(ring, size, cursor, &f, sizeof(f));
    ring_put(ring, size, cursor, h.indices.data(), h.indices.size() * 4);
    const std::uint64_t zero = 0;
    ring_put(ring, size, cursor, &zero, align8(h.indices.size() * 4) - h.indices.size() * 4);
    ring_put(ring, size, cursor, h.counts.data(), h.counts.size() * 8);
}

void Segment::journal_histogram(const HistogramRecord& r) noexcept {
    pending_write_ = journal_write();
    put_histogram(journal_, journal_bytes_, &pending_write_, r, 0);
    header_->journal_write.store(pending_write_, std::memory_order_release);
}

bool Segment::queue_histogram(const HistogramRecord& r, std::uint32_t raw) noexcept {
    const std::size_t bytes = histogram_entry_bytes(r.hist);
    std::uint64_t cursor = header_->queue_write.load(std::memory_order_relaxed);
    if (cursor - header_->queue_taken.load(std::memory_order_acquire) + bytes > queue_bytes_) return false;
    put_histogram(queue_, queue_bytes_, &cursor, r, raw);
    header_->queue_write.store(cursor, std::memory_order_release);  // the entry and its raw id, in one store
    return true;
}

void Segment::settle_raw(std::uint32_t raw) noexcept {
    // a max: ids grow in the order jobs are queued (one binning thread per run, first in first out)
    if (raw > header_->raw_done.load(std::memory_order_relaxed)) {
        header_->raw_done.store(raw, std::memory_order_release);
    }
}

void Segment::dequeue_histogram(std::size_t bytes) noexcept {
    header_->queue_taken.fetch_add(bytes, std::memory_order_release);
}

void Segment::retire(std::uint64_t journal_offset, std::uint64_t sequence) noexcept {
    header_->retired_sequence.store(sequence, std::memory_order_release);
    header_->journal_retired.store(journal_offset, std::memory_order_release);
}

bool Segment::define(std::uint32_t id, SeriesKind kind, const std::string& name) noexcept {
    const std::uint64_t used = header_->table_used.load(std::memory_order_relaxed);
    const std::size_t entry = align8(8 + name.size());
    if (used + entry > table_bytes_ || name.size() > 0xffff) return false;
    unsigned char* p = table_ + used;
    std::memcpy(p, &id, 4);
    p[4] = static_cast<unsigned char>(kind);
    p[5] = 0;
    const auto len = static_cast<std::uint16_t>(name.size());
    std::memcpy(p + 6, &len, 2);
    std::memcpy(p + 8, name.data(), name.size());
    header_->table_used.store(used + entry, std::memory_order_release);
    return true;
}

bool Segment::set_meta(const std::string& json) noexcept {
    if (json.size() > kSegmentHeaderBytes - kSegmentMetaOffset) return false;
    std::memcpy(base_ + kSegmentMetaOffset, json.data(), json.size());
    std::atomic_ref<std::uint32_t>(header_->meta_bytes).store(static_cast<std::uint32_t>(json.size()),
                                                              std::memory_order_release);
    return true;
}

bool Segment::unlink() noexcept {
    if (unlinked_) return false;
    unlinked_ = true;
    const bool removed = ::unlink(path_.c_str()) == 0;
    // The memory goes back now, not when the mapping goes (with the Stream): a page written later (a producer
    // racing the close) is simply allocated again.
    ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(kSegmentHeaderBytes),
                static_cast<off_t>(bytes_ - kSegmentHeaderBytes));
    return removed;
}

}  // namespace stepwire
