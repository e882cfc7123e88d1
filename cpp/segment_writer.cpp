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

namespace {
// Past this many strings the intern table of a segment starts again (ids keep counting up):
// a logger whose streams come and go for ever keeps a bounded table (FORMAT.md section 3.1).
constexpr size_t kMaxInterned = 1 << 12;
}  // namespace

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
    // The block header's crc32 of the raw payload already checks every decompressed byte.
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 0);
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
    strings_.clear();
    next_string_id_ = 0;
    out_.clear();
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    append_segment_header(out_, segment_no_,
                          uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()),
                          uint32_t(::getpid()));
    write_all(out_.data(), out_.size());
}

void SegmentWriter::close_segment() {
    out_.clear();
    append_segment_footer(out_, segment_blocks_, segment_records_);
    write_all(out_.data(), out_.size());
    if (::fsync(fd_) != 0 && errno != EINVAL) fail("cannot fsync segment", errno);
    if (::close(fd_) != 0) {
        fd_ = -1;
        fail("cannot close segment", errno);
    }
    fd_ = -1;
}

uint32_t SegmentWriter::intern(const std::string& s, Bytes& strings, uint32_t& defined) {
    auto it = strings_.find(s);
    if (it != strings_.end()) return it->second;
    if (strings_.size() >= kMaxInterned) strings_.clear();
    const uint32_t id = next_string_id_++;
    strings_.emplace(s, id);
    uint8_t* p = strings.reserve_tail(kMaxVarint + s.size());
    p = put_varint(p, s.size());
    std::memcpy(p, s.data(), s.size());
    strings.commit_to(p + s.size());
    ++defined;
    return id;
}

void SegmentWriter::append_registration_frames(Bytes& out, const std::vector<Known*>& regs) {
    Bytes entries;
    size_t i = 0;
    while (i < regs.size()) {
        const uint32_t first = next_string_id_;
        uint32_t defined = 0, count = 0;
        strings_buf_.clear();
        entries.clear();
        for (; i < regs.size(); ++i) {
            const Registration& r = regs[i]->reg;
            size_t worst = 64;
            for (const Label& l : r.labels) worst += l.name.size() + l.value_json.size() + 40;
            if (count > 0 && strings_buf_.size() + entries.size() + worst > kMaxRegistrationBody)
                break;  // the next frame takes it
            uint8_t* p = entries.reserve_tail(2 * kMaxVarint + 1 + 24);
            p = put_varint(p, r.stream_id);
            *p++ = r.flags();
            put_f64(p, r.epoch_scale);
            put_f64(p + 8, r.exact ? 0.0 : r.value_scale);
            p += 16;
            if (r.periodic) {
                put_f64(p, r.periodicity);
                p += 8;
            }
            p = put_varint(p, r.labels.size());
            entries.commit_to(p);
            for (const Label& l : r.labels) {
                const uint32_t name = intern(l.name, strings_buf_, defined);
                const uint32_t value = intern(l.value_json, strings_buf_, defined);
                uint8_t* q = entries.reserve_tail(2 * kMaxVarint);
                q = put_varint(q, name);
                q = put_varint(q, value);
                entries.commit_to(q);
            }
            ++count;
        }
        body_.clear();
        uint8_t* p = body_.reserve_tail(kMaxVarint);
        body_.commit_to(put_varint(p, defined));
        body_.append(strings_buf_.data(), strings_buf_.size());
        body_.append(entries.data(), entries.size());
        const uint32_t raw_crc = crc32(body_.data(), body_.size());
        const size_t bound = ZSTD_compressBound(body_.size());
        zbody_.resize(bound);
        const size_t csize = ZSTD_compress2(cctx_, zbody_.data(), bound, body_.data(), body_.size());
        const bool compressed = !ZSTD_isError(csize) && csize < body_.size();
        if (compressed)
            append_registrations(out, count, first, uint32_t(body_.size()), raw_crc,
                                 zbody_.data(), csize, true);
        else
            append_registrations(out, count, first, uint32_t(body_.size()), raw_crc,
                                 body_.data(), body_.size(), false);
    }
}

void SegmentWriter::add_registration(Registration&& reg) {
    const uint32_t sid = reg.stream_id;
    Known& k = known_[sid];
    k.reg = std::move(reg);
    k.written_in = 0;
    pending_.push_back(sid);
}

void SegmentWriter::write_pending() {
    if (pending_.empty()) return;
    need_.clear();
    for (uint32_t sid : pending_) {
        auto it = known_.find(sid);
        if (it != known_.end() && it->second.written_in != segment_no_ + 1) need_.push_back(&it->second);
    }
    pending_.clear();
    if (need_.empty()) return;
    out_.clear();
    append_registration_frames(out_, need_);
    for (Known* k : need_) k->written_in = segment_no_ + 1;
    write_all(out_.data(), out_.size());
}

void SegmentWriter::retire(const std::vector<uint32_t>& sids) {
    write_pending();  // a stream registered and retired unrecorded is still described
    for (uint32_t sid : sids) known_.erase(sid);
}

void SegmentWriter::write_block(const SealedBlock& block) {
    // The payload: directory, then every section's columns (FORMAT.md section 5).
    raw_.clear();
    const auto& secs = block.sections;
    uint8_t* p = raw_.reserve_tail(kMaxVarint + secs.size() * kDirectoryEntryBound);
    p = put_varint(p, secs.size());
    uint32_t prev = 0;
    for (size_t k = 0; k < secs.size(); ++k) {
        const Section& s = *secs[k];
        p = put_varint(p, k == 0 ? s.sid : s.sid - prev - 1);
        p = put_varint(p, s.records);
        p = put_varint(p, s.nnz);
        p = put_varint(p, s.bytes());
        prev = s.sid;
    }
    raw_.commit_to(p);
    for (const auto& s : secs) {
        raw_.append(s->ticks.data(), s->ticks.size());
        raw_.append(s->counts.data(), s->counts.size());
        raw_.append(s->indices.data(), s->indices.size());
        raw_.append(s->values.data(), s->values.size());
    }
    const size_t raw_size = raw_.size();
    const size_t bound = ZSTD_compressBound(raw_size);
    const size_t head = kFrameHead + kBlockHeaderPayload;
    scratch_.resize(head + bound);
    uint8_t* dst = scratch_.data() + head;
    const size_t csize = ZSTD_compress2(cctx_, dst, bound, raw_.data(), raw_size);
    if (ZSTD_isError(csize))
        throw WriterFailure(std::string("zstd compression failed: ") + ZSTD_getErrorName(csize), 0);

    // Registrations this block needs in the segment it lands in (FORMAT.md section 3.2): the
    // new streams' batch, and any of its streams not yet described in the segment.
    auto collect = [&] {
        need_.clear();
        const uint32_t here = segment_no_ + 1;
        for (uint32_t sid : pending_) {
            auto it = known_.find(sid);
            if (it != known_.end() && it->second.written_in != here) {
                it->second.written_in = ~0u;  // collected once
                need_.push_back(&it->second);
            }
        }
        for (const auto& s : secs) {
            auto it = known_.find(s->sid);
            if (it != known_.end() && it->second.written_in != here && it->second.written_in != ~0u) {
                it->second.written_in = ~0u;
                need_.push_back(&it->second);
            }
        }
        for (Known* k : need_) k->written_in = 0;
        out_.clear();
        append_registration_frames(out_, need_);
    };
    collect();
    const uint64_t frames = out_.size() + head + csize;
    if (segment_blocks_ > 0 && segment_bytes_ + frames > rotate_bytes_) {
        close_segment();
        ++segment_no_;
        open_segment();
        collect();  // the new segment's string table and everything the block needs
    }
    for (Known* k : need_) k->written_in = segment_no_ + 1;
    pending_.clear();

    BlockHeader h;
    h.block_seq = block_seq_++;
    h.n_records = block.records;
    h.raw_size = uint32_t(raw_size);
    h.compressed_size = uint32_t(csize);
    h.compressed_crc = crc32(dst, csize);
    h.raw_crc = crc32(raw_.data(), raw_size);
    h.nnz = block.nnz;
    h.n_streams = uint32_t(secs.size());
    h.min_sid = secs.empty() ? 0 : secs.front()->sid;
    h.max_sid = secs.empty() ? 0 : secs.back()->sid;
    write_block_header(scratch_.data(), h);
    // Registrations, header and data go out in one write(), so a crash leaves at worst one torn
    // frame at the end of the file.
    out_.append(scratch_.data(), head + csize);
    write_all(out_.data(), out_.size());
    ++segment_blocks_;
    ++blocks_total_;
    segment_records_ += block.records;
    // The buffers of one huge record's block are given back once blocks are usual again.
    for (Bytes* b : {&raw_, &scratch_, &out_})
        if (b->capacity() > (size_t(8) << 20) && b->capacity() > 4 * b->size())
            b->shrink_to(2 * b->size());
}

void SegmentWriter::close() {
    if (closed_) return;
    closed_ = true;
    if (fd_ >= 0) {
        write_pending();
        close_segment();
    }
    fsync_directory(dir_);
}

}  // namespace ddl
