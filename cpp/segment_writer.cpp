#include "segment_writer.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.hpp"

namespace ddl {

void fsync_directory(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;  // best effort: some filesystems do not allow it
    ::fsync(fd);
    ::close(fd);
}

SegmentWriter::SegmentWriter(std::string dir, uint64_t rotate_bytes, int zstd_level)
    : dir_(std::move(dir)), rotate_bytes_(rotate_bytes) {
    cctx_ = ZSTD_createCCtx();
    if (!cctx_) throw WriterFailure("cannot create a zstd compression context", ENOMEM);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, zstd_level);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_contentSizeFlag, 1);
    open_segment();
}

SegmentWriter::~SegmentWriter() {
    if (fd_ >= 0) ::close(fd_);
    ZSTD_freeCCtx(cctx_);
}

void SegmentWriter::fail(const std::string& what, int err) const {
    std::string msg = what + " '" + path_ + "'";
    if (err) msg += ": " + std::string(std::strerror(err));
    throw WriterFailure(msg, err);
}

void SegmentWriter::write_all(const uint8_t* p, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd_, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            fail("cannot write segment", errno);
        }
        p += w;
        n -= size_t(w);
        segment_bytes_ += uint64_t(w);
        bytes_total_ += uint64_t(w);
    }
}

void SegmentWriter::open_segment() {
    char name[32];
    std::snprintf(name, sizeof(name), "/%05u.seg.zst", segment_no_);
    path_ = dir_ + name;
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create segment", errno);
    fsync_directory(dir_);
    segment_bytes_ = 0;
    segment_blocks_ = 0;
    segment_records_ = 0;
    ++segments_;
    frame_buf_.clear();
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    append_segment_header(frame_buf_, segment_no_,
                          uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()),
                          uint32_t(::getpid()));
    frame_buf_.append(registrations_.data(), registrations_.size());
    write_all(frame_buf_.data(), frame_buf_.size());
}

void SegmentWriter::close_segment() {
    frame_buf_.clear();
    append_segment_footer(frame_buf_, segment_blocks_, segment_records_);
    write_all(frame_buf_.data(), frame_buf_.size());
    if (::fsync(fd_) != 0 && errno != EINVAL) fail("cannot fsync segment", errno);
    if (::close(fd_) != 0) {
        fd_ = -1;
        fail("cannot close segment", errno);
    }
    fd_ = -1;
}

void SegmentWriter::add_registration(const Bytes& frame) {
    registrations_.insert(registrations_.end(), frame.data(), frame.data() + frame.size());
    write_all(frame.data(), frame.size());
}

void SegmentWriter::write_block(const uint8_t* raw, size_t raw_size, uint32_t n_records) {
    if (segment_blocks_ > 0 && segment_bytes_ >= rotate_bytes_) {
        close_segment();
        ++segment_no_;
        open_segment();
    }
    const size_t bound = ZSTD_compressBound(raw_size);
    compressed_.resize(kFrameHead + kBlockHeaderPayload + bound);
    uint8_t* dst = compressed_.data() + kFrameHead + kBlockHeaderPayload;
    const size_t csize = ZSTD_compress2(cctx_, dst, bound, raw, raw_size);
    if (ZSTD_isError(csize))
        throw WriterFailure(std::string("zstd compression failed: ") + ZSTD_getErrorName(csize), 0);

    BlockHeader h;
    h.block_seq = block_seq_++;
    h.n_records = n_records;
    h.raw_size = uint32_t(raw_size);
    h.compressed_size = uint32_t(csize);
    h.compressed_crc = crc32(dst, csize);
    h.raw_crc = crc32(raw, raw_size);
    // Header and data go out in one write(), so a crash leaves at worst one torn frame.
    Bytes header;
    append_block_header(header, h);
    std::memcpy(compressed_.data(), header.data(), header.size());
    write_all(compressed_.data(), header.size() + csize);
    ++segment_blocks_;
    ++blocks_total_;
    segment_records_ += n_records;
}

void SegmentWriter::close() {
    if (closed_) return;
    closed_ = true;
    if (fd_ >= 0) close_segment();
    fsync_directory(dir_);
}

}  // namespace ddl
