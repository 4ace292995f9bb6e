//! The Lua heap's small blocks: a per-state cache of freed blocks by size class, in front of the server's
//! allocator.
//!
//! Every call makes and drops a few small objects (the KEYS and ARGV tables, strings of replies, closures), and
//! each went through `RM_Realloc`/`RM_Free` (zmalloc's bookkeeping, then malloc): about 140 instructions a block
//! and a block freed, a tenth of a call. Lua always tells its allocator the exact size of the block it frees, so
//! blocks up to `SMALL_MAX` bytes are allocated rounded up to their 8-byte class (Lua's sizes mostly are
//! multiples of 8 already, so this wastes next to nothing) and a freed one is kept for the next allocation of
//! its class, up to `KEEP_BYTES` in all (beyond that they go back to the server). The garbage of the 50 calls
//! between two GC steps (two tables a call, plus strings) is freed at once and fits well within it. The cached
//! blocks stay allocated through the server's allocator, so `used_memory` still counts them; they are given
//! back when the state is closed.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::ptr;

use valkey_module::raw;

const GRAIN: usize = 8;
/// Blocks up to this size are cached.
pub const SMALL_MAX: usize = 256;
const CLASSES: usize = SMALL_MAX / GRAIN;
/// Bytes of freed blocks kept, all classes together.
const KEEP_BYTES: usize = 64 * 1024;

struct Node {
    next: *mut Node,
}

#[derive(Clone, Copy)]
struct List {
    head: *mut Node,
}

pub struct BlockCache {
    lists: UnsafeCell<[List; CLASSES]>,
    /// Bytes held in `lists`.
    cached: UnsafeCell<usize>,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            lists: UnsafeCell::new(
                [List {
                    head: ptr::null_mut(),
                }; CLASSES],
            ),
            cached: UnsafeCell::new(0),
        }
    }
}

/// The class of a small size (1..=SMALL_MAX): its blocks are `(class + 1) * GRAIN` bytes.
fn class(size: usize) -> usize {
    (size - 1) / GRAIN
}

unsafe fn sys_alloc(size: usize) -> *mut c_void {
    match raw::RedisModule_Alloc {
        Some(f) => f(size),
        None => libc::malloc(size),
    }
}

unsafe fn sys_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    match raw::RedisModule_Realloc {
        Some(f) => f(p, size),
        None => libc::realloc(p, size),
    }
}

unsafe fn sys_free(p: *mut c_void) {
    match raw::RedisModule_Free {
        Some(f) => f(p),
        None => libc::free(p),
    }
}

impl BlockCache {
    #[allow(clippy::mut_from_ref)]
    unsafe fn list(&self, class: usize) -> &mut List {
        // SAFETY: a cache belongs to one Lua state, used by one thread at a time, never re-entered.
        &mut (*self.lists.get())[class]
    }

    /// A block of at least `size` (> 0) bytes, or null.
    pub unsafe fn alloc(&self, size: usize) -> *mut c_void {
        if size > SMALL_MAX {
            return sys_alloc(size);
        }
        let c = class(size);
        let list = self.list(c);
        if !list.head.is_null() {
            let node = list.head;
            list.head = (*node).next;
            *self.cached.get() -= (c + 1) * GRAIN;
            return node.cast();
        }
        sys_alloc((c + 1) * GRAIN)
    }

    /// Frees a block this cache gave for `size` bytes.
    pub unsafe fn free(&self, p: *mut c_void, size: usize) {
        if size > SMALL_MAX || size == 0 {
            sys_free(p);
            return;
        }
        let c = class(size);
        let cached = &mut *self.cached.get();
        if *cached + (c + 1) * GRAIN > KEEP_BYTES {
            sys_free(p);
            return;
        }
        *cached += (c + 1) * GRAIN;
        let list = self.list(c);
        let node = p.cast::<Node>();
        (*node).next = list.head;
        list.head = node;
    }

    /// Lua's realloc: `p` (null, or a block given for `old` bytes) resized to `new` (> 0) bytes. On failure
    /// returns null and leaves `p` as it was.
    pub unsafe fn realloc(&self, p: *mut c_void, old: usize, new: usize) -> *mut c_void {
        if p.is_null() {
            return self.alloc(new);
        }
        if old > SMALL_MAX && new > SMALL_MAX {
            return sys_realloc(p, new);
        }
        if old <= SMALL_MAX && new <= SMALL_MAX && class(old) == class(new) {
            // The block already has its class's size.
            return p;
        }
        let np = self.alloc(new);
        if !np.is_null() {
            ptr::copy_nonoverlapping(p.cast::<u8>(), np.cast::<u8>(), old.min(new));
            self.free(p, old);
        }
        np
    }

    /// Bytes held in the cache (allocated, not in use by Lua).
    #[cfg(test)]
    pub fn cached_bytes(&self) -> usize {
        // SAFETY: as in `list`.
        unsafe { *self.cached.get() }
    }
}

impl Drop for BlockCache {
    fn drop(&mut self) {
        for list in self.lists.get_mut().iter_mut() {
            let mut node = list.head;
            while !node.is_null() {
                // SAFETY: every node is a block from sys_alloc that nothing else refers to.
                unsafe {
                    let next = (*node).next;
                    sys_free(node.cast());
                    node = next;
                }
            }
            list.head = ptr::null_mut();
        }
        *self.cached.get_mut() = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_freed_blocks_of_the_same_class() {
        let cache = BlockCache::default();
        unsafe {
            let a = cache.alloc(40);
            cache.free(a, 40);
            // 33..=40 share a class: the freed block comes back.
            let b = cache.alloc(33);
            assert_eq!(a, b);
            let c = cache.alloc(40);
            assert_ne!(b, c);
            cache.free(b, 33);
            cache.free(c, 40);
            assert_eq!(cache.cached_bytes(), 2 * 40);
        }
    }

    #[test]
    fn keeps_at_most_keep_bytes() {
        let cache = BlockCache::default();
        unsafe {
            let n = KEEP_BYTES / 16 + 10;
            let blocks: Vec<_> = (0..n).map(|_| cache.alloc(16)).collect();
            for b in blocks {
                cache.free(b, 16);
            }
            assert_eq!(cache.cached_bytes(), KEEP_BYTES);
            // Taking blocks back makes room again.
            let b = cache.alloc(16);
            assert_eq!(cache.cached_bytes(), KEEP_BYTES - 16);
            cache.free(b, 16);
            assert_eq!(cache.cached_bytes(), KEEP_BYTES);
        }
    }

    #[test]
    fn realloc_keeps_contents_across_classes_and_sizes() {
        let cache = BlockCache::default();
        unsafe {
            let mut p = cache.realloc(ptr::null_mut(), 0, 10).cast::<u8>();
            for i in 0..10 {
                *p.add(i) = i as u8;
            }
            let mut size = 10;
            // Within the class, then to larger classes, past SMALL_MAX and back.
            for new in [16, 17, 24, 200, 256, 257, 4000, 300, 100, 12] {
                p = cache.realloc(p.cast(), size, new).cast();
                assert!(!p.is_null());
                for i in 0..10 {
                    assert_eq!(*p.add(i), i as u8, "byte {i} after resizing to {new}");
                }
                size = new;
            }
            cache.free(p.cast(), size);
        }
    }
}
