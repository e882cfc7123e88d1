// Appends frames to NNNNN.seg.zst files: compresses each block as one zstd frame behind a
// checksummed BlockHeader, re-emits stream registrations at the start of every segment, rotates
// at rotate_bytes. Used only by the logger's writer thread; every failure is a WriterFailure.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <zstd.h>

#include "codec.hpp"
#include "frames.hpp"

namespace ddl {

class SegmentWriter {
public:
    SegmentWriter(std::string dir, uint64_t rotate_bytes, int zstd_level);
    ~SegmentWriter();
    SegmentWriter(const SegmentWriter&) = delete;
    SegmentWriter& operator=(const SegmentWriter&) = delete;

    // `frame` is a complete registration frame; kept to start every later segment with it.
    void add_registration(const Bytes& frame);
    void write_block(const uint8_t* raw, size_t raw_size, uint32_t n_records);
    // Footer, fsync of file and directory. Safe to call once; later calls do nothing.
    void close();

    uint64_t segments() const { return segments_; }
    uint64_t blocks() const { return blocks_total_; }
    uint64_t bytes_written() const { return bytes_total_; }

private:
    void open_segment();
    void close_segment();
    void write_all(const uint8_t* p, size_t n);
    [[noreturn]] void fail(const std::string& what, int err) const;

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
    std::vector<uint8_t> registrations_;  // every registration frame so far, back to back
    Bytes frame_buf_;
    Bytes compressed_;
};

// fsync a directory so that a newly created file's entry survives a crash.
void fsync_directory(const std::string& dir);

}  // namespace ddl
