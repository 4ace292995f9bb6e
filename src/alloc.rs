//! The module's global allocator: the server's allocator once the module is loaded (so rfunc's memory, the Lua
//! heap included, counts toward `used_memory` and `maxmemory` like any module allocation), the system allocator
//! when the server's is not there (unit tests, tools linking the library).

use std::alloc::{GlobalAlloc, Layout, System};

use valkey_module::alloc::ValkeyAlloc;
use valkey_module::raw;

pub struct RfuncAlloc;

fn server_alloc_available() -> bool {
    // SAFETY: reading a function pointer set once by RedisModule_Init before any allocation we make.
    unsafe { (*std::ptr::addr_of!(raw::RedisModule_Alloc)).is_some() }
}

unsafe impl GlobalAlloc for RfuncAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if server_alloc_available() {
            ValkeyAlloc.alloc(layout)
        } else {
            System.alloc(layout)
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if server_alloc_available() {
            ValkeyAlloc.alloc_zeroed(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if server_alloc_available() {
            ValkeyAlloc.dealloc(ptr, layout)
        } else {
            System.dealloc(ptr, layout)
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if server_alloc_available() {
            ValkeyAlloc.realloc(ptr, layout, new_size)
        } else {
            System.realloc(ptr, layout, new_size)
        }
    }
}
