//! Shared-memory races: two threads of a block touching the same byte of shared memory, one
//! of them writing, with no barrier between them — a missing `bar.sync` / `s_barrier`, which
//! on a GPU gives wrong values only sometimes. The emulator checks every shared access
//! (kernels' loads and stores, and the `wgmma` operand reads) against a shadow of the window:
//! per byte, the barrier epoch of its last accesses, the thread that wrote it and the thread
//! that last read it in that epoch. The check never reports a race that is not one; it can
//! miss one (a byte read by two threads, then written by the second).
//!
//! Reads of bytes no thread of the block has written are reported too: shared memory starts
//! a block holding whatever the GPU's last use of it left (the emulator's window too: the
//! previous block's values, which can hide the bug). A missing barrier between a write and
//! a read shows as a race or, when the reader runs first, as such a read.

use std::sync::atomic::{AtomicU64, Ordering};

/// The shadow of a shared-memory window of `len` bytes.
pub struct Shadow {
    bytes: Vec<AtomicU64>,
    /// The epoch of each byte's last write.
    written: Vec<std::sync::atomic::AtomicU32>,
}

/// What an access conflicts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// `other` wrote (or read, for a write) `byte` since the last barrier.
    Race { byte: usize, other: u32, other_wrote: bool },
    /// A read of `byte`, which no thread of the block has written.
    Unwritten { byte: usize },
}

/// A byte's last accesses: `(epoch, writer + 1, reader + 1)` (0: none in that epoch).
fn unpack(word: u64) -> (u32, u32, u32) {
    (word as u32, ((word >> 32) & 0x3ff) as u32, ((word >> 42) & 0x3ff) as u32)
}

fn pack(epoch: u32, writer: u32, reader: u32) -> u64 {
    u64::from(epoch) | (u64::from(writer) << 32) | (u64::from(reader) << 42)
}

/// One access: its thread, kind, the barrier epoch it happens in and the epoch its block
/// began in.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub thread: u32,
    pub write: bool,
    pub epoch: u64,
    pub block_start: u64,
}

impl Shadow {
    pub fn new(len: usize) -> Shadow {
        Shadow {
            bytes: (0..len).map(|_| AtomicU64::new(0)).collect(),
            written: (0..len).map(|_| std::sync::atomic::AtomicU32::new(0)).collect(),
        }
    }

    /// Records `access` to bytes `offset .. offset + len`; the first conflict found.
    pub fn record(&self, offset: usize, len: usize, access: Access) -> Result<(), Conflict> {
        let (epoch, me) = (access.epoch as u32, access.thread + 1);
        for byte in offset..offset + len {
            if access.write {
                self.written[byte].store(epoch, Ordering::Relaxed);
            } else if self.written[byte].load(Ordering::Relaxed) < access.block_start as u32 {
                return Err(Conflict::Unwritten { byte });
            }
            let cell = &self.bytes[byte];
            let mut old = cell.load(Ordering::Relaxed);
            loop {
                let (e, writer, reader) = unpack(old);
                let (mut writer, mut reader) = if e == epoch { (writer, reader) } else { (0, 0) };
                if writer != 0 && writer != me {
                    return Err(Conflict::Race { byte, other: writer - 1, other_wrote: true });
                }
                if access.write {
                    if reader != 0 && reader != me {
                        return Err(Conflict::Race { byte, other: reader - 1, other_wrote: false });
                    }
                    writer = me;
                } else {
                    reader = me;
                }
                match cell.compare_exchange_weak(old, pack(epoch, writer, reader), Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => break,
                    Err(now) => old = now,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(thread: u32, write: bool, epoch: u64) -> Access {
        Access { thread, write, epoch, block_start: 1 }
    }

    fn race(byte: usize, other: u32, other_wrote: bool) -> Result<(), Conflict> {
        Err(Conflict::Race { byte, other, other_wrote })
    }

    #[test]
    fn accesses_of_one_epoch_race_when_another_thread_wrote_or_read_before_a_write() {
        let s = Shadow::new(16);
        s.record(0, 16, at(0, true, 1)).unwrap();
        // Many readers, no writer: no race.
        for t in 0..4 {
            s.record(0, 4, at(t, false, 2)).unwrap();
        }
        // A write after another thread's read in the same epoch.
        assert_eq!(s.record(2, 2, at(7, true, 2)), race(2, 3, false));
        // After a barrier (a new epoch) the write is fine, and so is its writer's own read.
        s.record(2, 2, at(7, true, 3)).unwrap();
        s.record(2, 2, at(7, false, 3)).unwrap();
        // Another thread's read of it before the next barrier is not.
        assert_eq!(s.record(3, 1, at(1, false, 3)), race(3, 7, true));
        s.record(3, 1, at(1, false, 4)).unwrap();
    }

    #[test]
    fn a_read_of_a_byte_the_block_never_wrote_is_reported() {
        let s = Shadow::new(8);
        s.record(0, 4, Access { thread: 0, write: true, epoch: 5, block_start: 5 }).unwrap();
        s.record(0, 4, Access { thread: 1, write: false, epoch: 6, block_start: 5 }).unwrap();
        assert_eq!(
            s.record(2, 4, Access { thread: 1, write: false, epoch: 6, block_start: 5 }),
            Err(Conflict::Unwritten { byte: 4 })
        );
        // The next block (from epoch 7) has written nothing yet.
        assert_eq!(
            s.record(0, 1, Access { thread: 0, write: false, epoch: 7, block_start: 7 }),
            Err(Conflict::Unwritten { byte: 0 })
        );
    }
}
