// Is a text valid JSON, as Python's json.loads reads it (NaN, Infinity and -Infinity included)?
// The decoder checks label values (format 2) and registration texts (format 1) with it, so that it
// drops and reports exactly what the pure-Python reader does (docs/FORMAT.md sections 3.3, 8.1.2).
// A checker, not a parser: nothing is built.
#pragma once

#include <cstddef>
#include <cstring>

namespace ddl {

class JsonCheck {
public:
    // `object_only`: the top-level value must be an object.
    static bool valid(const char* text, size_t n, bool object_only) {
        JsonCheck c(text, n);
        c.ws();
        if (object_only && (c.p_ == c.end_ || *c.p_ != '{')) return false;
        if (!c.value(0)) return false;
        c.ws();
        return c.p_ == c.end_;
    }

private:
    static constexpr int kMaxDepth = 4096;  // arrays and objects nested (FORMAT.md 3.3)

    JsonCheck(const char* text, size_t n) : p_(text), end_(text + n) {}

    void ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }
    bool literal(const char* word) {
        const size_t n = std::strlen(word);
        if (size_t(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
        p_ += n;
        return true;
    }
    static bool digit(char c) { return c >= '0' && c <= '9'; }
    static bool hex(char c) {
        return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    }

    bool number() {
        if (p_ < end_ && *p_ == '-') {
            ++p_;
            if (p_ < end_ && *p_ == 'I') return literal("Infinity");
        }
        if (p_ >= end_ || !digit(*p_)) return false;
        if (*p_ == '0') {
            ++p_;
        } else {
            while (p_ < end_ && digit(*p_)) ++p_;
        }
        if (p_ < end_ && *p_ == '.' && p_ + 1 < end_ && digit(p_[1])) {
            ++p_;
            while (p_ < end_ && digit(*p_)) ++p_;
        }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            const char* q = p_ + 1;
            if (q < end_ && (*q == '+' || *q == '-')) ++q;
            if (q < end_ && digit(*q)) {
                p_ = q;
                while (p_ < end_ && digit(*p_)) ++p_;
            }
        }
        return true;
    }

    bool string() {
        ++p_;  // the opening quote
        while (p_ < end_) {
            const unsigned char c = static_cast<unsigned char>(*p_++);
            if (c == '"') return true;
            if (c < 0x20) return false;
            if (c != '\\') continue;
            if (p_ >= end_) return false;
            const char e = *p_++;
            if (e == 'u') {
                if (end_ - p_ < 4) return false;
                for (int k = 0; k < 4; ++k)
                    if (!hex(p_[k])) return false;
                p_ += 4;
            } else if (!std::strchr("\"\\/bfnrt", e) || e == 0) {
                return false;
            }
        }
        return false;
    }

    // `depth`: the arrays and objects this value is inside of.
    bool value(int depth) {
        if (p_ >= end_) return false;
        switch (*p_) {
            case '"': return string();
            case '{': {
                if (depth >= kMaxDepth) return false;
                ++p_;
                ws();
                if (p_ < end_ && *p_ == '}') {
                    ++p_;
                    return true;
                }
                for (;;) {
                    if (p_ >= end_ || *p_ != '"' || !string()) return false;
                    ws();
                    if (p_ >= end_ || *p_ != ':') return false;
                    ++p_;
                    ws();
                    if (!value(depth + 1)) return false;
                    ws();
                    if (p_ >= end_) return false;
                    if (*p_ == '}') {
                        ++p_;
                        return true;
                    }
                    if (*p_ != ',') return false;
                    ++p_;
                    ws();
                }
            }
            case '[': {
                if (depth >= kMaxDepth) return false;
                ++p_;
                ws();
                if (p_ < end_ && *p_ == ']') {
                    ++p_;
                    return true;
                }
                for (;;) {
                    if (!value(depth + 1)) return false;
                    ws();
                    if (p_ >= end_) return false;
                    if (*p_ == ']') {
                        ++p_;
                        return true;
                    }
                    if (*p_ != ',') return false;
                    ++p_;
                    ws();
                }
            }
            case 't': return literal("true");
            case 'f': return literal("false");
            case 'n': return literal("null");
            case 'N': return literal("NaN");
            case 'I': return literal("Infinity");
            default: return number();
        }
    }

    const char* p_;
    const char* end_;
};

}  // namespace ddl
