// The boundary of every export: clears the thread's last message, runs the body and turns any C++ exception into
// a status, so that none crosses the C ABI.
#pragma once

#include <new>

#include "flash_dmattn.h"
#include "status.h"

namespace fdma {

template <typename F>
fdma_status guarded(F&& body) {
    try {
        clear_last_error();
        return body();
    } catch (const std::bad_alloc&) {
        return fail(FDMA_STATUS_INTERNAL, "out of host memory");
    } catch (...) {
        return fail(FDMA_STATUS_INTERNAL, "unexpected C++ exception");
    }
}

}  // namespace fdma
