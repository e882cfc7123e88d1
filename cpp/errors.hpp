// Exception types of the native core. None of this includes Python headers: the bindings map
// each type to its Python exception class (disco_data_logger/errors.py).
#pragma once

#include <stdexcept>
#include <string>

namespace ddl {

// Bad input from the caller; raised before anything is written.
struct InvalidInput : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// A stream id that was never registered, or was retired.
struct UnknownStream : std::out_of_range {
    using std::out_of_range::out_of_range;
};

// A logger used in a process forked from the one that created it: its writer thread and locks
// belong to the parent.
struct ForkedError : std::logic_error {
    using std::logic_error::logic_error;
};

// Use after close().
struct ClosedError : std::logic_error {
    using std::logic_error::logic_error;
};

// The writer thread failed (or could not start); carries errno when there is one.
struct WriterFailure : std::runtime_error {
    WriterFailure(const std::string& msg, int err) : std::runtime_error(msg), error_number(err) {}
    int error_number;
};

// A file that is not in a format this version reads (unknown version, unreadable file).
struct FormatFailure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace ddl
