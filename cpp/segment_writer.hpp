// Appends format-2 frames to NNNNN.seg.zst files (docs/FORMAT.md sections 2, 3 and 6): batches
// stream registrations into interned, compressed registration frames; writes each sealed block as
// its directory and sections compressed into one zstd frame behind a checksummed BlockHeader;
// writes a stream's registration again in a new segment before the first block that holds its
// records; rotates at rotate_bytes. Used only by the logger's writer thread; every failure is a
// WriterFailure.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <zstd.h>

#include "block_encoder.hpp"
#include "codec.hpp"
#include "frames.hpp"

namespace ddl {

class SegmentWriter {
public:
    SegmentWriter(std::string dir, uint64_t rotate_bytes, int zstd_level);
    ~SegmentWriter();
    SegmentWriter(const SegmentWriter&) = delete;
    SegmentWriter& operator=(const SegmentWriter&) = delete;

    // A new stream: kept for later segments, and written with the next batch (write_pending()).
    void add_registration(Registration&& reg);
    // Writes the registrations added since the last batch as one frame (or a few, if huge).
    void write_pending();
    // Forgets streams that will never be recorded again (their registrations already written).
    void retire(const std::vector<uint32_t>& sids);
    void write_block(const SealedBlock& block);
    // Footer, fsync of file and directory. Safe to call once; later calls do nothing.
    void close();

    uint64_t segments() const { return segments_; }
    uint64_t blocks() const { return blocks_total_; }
    uint64_t bytes_written() const { return bytes_total_; }

private:
    struct Known {
        Registration reg;
        uint32_t written_in = 0;  // 1 + number of the last segment it was written in; 0: never
    };

    void open_segment();
    void close_segment();
    void write_all(const uint8_t* p, size_t n);
    [[noreturn]] void fail(const std::string& what, int err) const;
    // Appends registration frames for `regs` to `out` and marks them written in this segment.
    void append_registration_frames(Bytes& out, const std::vector<Known*>& regs);
    uint32_t intern(const std::string& s, Bytes& strings, uint32_t& defined);

    std::string dir_;
    uint64_t rotate_bytes_;
    ZSTD_CCtx* cctx_ = nullptr;
    int fd_ = -1;
    std::string path_;
    uint32_t segment_no_ = 0;
    uint64_t segment_bytes_ = 0;
    uint32_t segment_blocks_ = 0;
    uint64_t segment_records_ = 0;
    uint32_t block_seq_ = 0;
    uint64_t segments_ = 0;
    uint64_t blocks_total_ = 0;
    uint64_t bytes_total_ = 0;
    bool closed_ = false;

    std::unordered_map<uint32_t, Known> known_;  // live streams' registrations
    std::vector<uint32_t> pending_;               // registered, not yet written
    // Strings of the current segment's registration frames and their ids (FORMAT.md 3.1).
    std::unordered_map<std::string, uint32_t> strings_;
    uint32_t next_string_id_ = 0;

    Bytes raw_;         // a block's payload: directory + sections
    Bytes out_;         // frames to write: block header + zstd frame, or registration frames
    Bytes body_;        // a registration frame's raw body
    Bytes scratch_;     // a block's header frame and compressed payload
    Bytes zbody_;       // a registration frame's compressed body
    Bytes strings_buf_;
    std::vector<Known*> need_;
};

// fsync a directory so that a newly created file's entry survives a crash.
void fsync_directory(const std::string& dir);

}  // namespace ddl
