//! What the emulator runs in place of the GPU-only operations of a kernel: thread and block
//! ids, barriers, lane exchanges (NVIDIA's `shfl.sync`, AMD's `ds_bpermute`, `mbcnt`), and the
//! matrix instructions (NVIDIA's `mma.sync` m16n8k16, AMD's MFMA 16×16×16 and RDNA 3's WMMA
//! 16×16×16), each with the fragment layout its vendor documents — written from the vendors'
//! descriptions, not from kiln's own layouts (`MmaLayout`), which they check. Hopper's
//! `wgmma`, inline PTX in kiln's kernels, is in [`super::ptx`].
//!
//! Every operation reads and writes flat 64-bit slots: the operands of the call it replaces,
//! vectors and structs taken apart element by element (see [`super::rewrite`]).

use super::ptx::PtxProgram;
use super::races::{Access, Conflict, Shadow};
use super::sync::{BlockSync, Exchanged, Meeting};

/// One operation the rewritten kernels call the emulator for.
#[derive(Clone, Debug)]
pub enum Op {
    ThreadId,
    BlockId,
    BlockDim,
    GridDim,
    /// The block's barrier.
    Barrier,
    /// NVIDIA `shfl.sync` (mask, value, lane or offset, clamp) → value.
    Shuffle(ShuffleMode),
    /// AMD `ds_bpermute` (byte address of the source lane, value) → value.
    Bpermute,
    /// AMD `mbcnt_lo` / `mbcnt_hi` (mask, addend): the set mask bits below this lane.
    MbcntLo,
    MbcntHi,
    /// NVIDIA `mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32`.
    MmaSync {
        bf16: bool,
    },
    /// AMD `v_mfma_f32_16x16x16{f16,bf16_1k}` (wavefronts of 64).
    Mfma {
        bf16: bool,
    },
    /// AMD RDNA 3 `v_wmma_f32_16x16x16_{f16,bf16}` (wavefronts of 32).
    Wmma {
        bf16: bool,
    },
    /// Inline PTX.
    Ptx(PtxProgram),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShuffleMode {
    Up,
    Down,
    Butterfly,
    Index,
}

impl Op {
    /// The operation an intrinsic stands for, or `None` when the emulator does not know it.
    pub fn of_intrinsic(name: &str) -> Option<Op> {
        let shuffle = |rest: &str| {
            let mode = rest.strip_suffix(".f32").or_else(|| rest.strip_suffix(".i32"))?;
            Some(Op::Shuffle(match mode {
                "up" => ShuffleMode::Up,
                "down" => ShuffleMode::Down,
                "bfly" => ShuffleMode::Butterfly,
                "idx" => ShuffleMode::Index,
                _ => return None,
            }))
        };
        Some(match name {
            "llvm.nvvm.read.ptx.sreg.tid.x" | "llvm.amdgcn.workitem.id.x" => Op::ThreadId,
            "llvm.nvvm.read.ptx.sreg.ctaid.x" | "llvm.amdgcn.workgroup.id.x" => Op::BlockId,
            "llvm.nvvm.read.ptx.sreg.ntid.x" => Op::BlockDim,
            "llvm.nvvm.read.ptx.sreg.nctaid.x" => Op::GridDim,
            "llvm.nvvm.barrier0" | "llvm.amdgcn.s.barrier" => Op::Barrier,
            "llvm.amdgcn.ds.bpermute" => Op::Bpermute,
            "llvm.amdgcn.mbcnt.lo" => Op::MbcntLo,
            "llvm.amdgcn.mbcnt.hi" => Op::MbcntHi,
            "llvm.nvvm.mma.m16n8k16.row.col.f32.f32" => Op::MmaSync { bf16: false },
            "llvm.nvvm.mma.m16n8k16.row.col.bf16" => Op::MmaSync { bf16: true },
            "llvm.amdgcn.mfma.f32.16x16x16f16" => Op::Mfma { bf16: false },
            "llvm.amdgcn.mfma.f32.16x16x16bf16.1k" => Op::Mfma { bf16: true },
            _ => {
                if let Some(rest) = name.strip_prefix("llvm.nvvm.shfl.sync.") {
                    return shuffle(rest);
                }
                if let Some(rest) = name.strip_prefix("llvm.amdgcn.wmma.f32.16x16x16.") {
                    return match rest.split('.').next() {
                        Some("f16") => Some(Op::Wmma { bf16: false }),
                        Some("bf16") => Some(Op::Wmma { bf16: true }),
                        _ => None,
                    };
                }
                return None;
            }
        })
    }
}

impl Op {
    /// Whether the operation meets other threads (so that the block's threads must run
    /// side by side).
    pub fn meets(&self) -> bool {
        match self {
            Op::ThreadId | Op::BlockId | Op::BlockDim | Op::GridDim | Op::MbcntLo | Op::MbcntHi => false,
            Op::Barrier | Op::Shuffle(_) | Op::Bpermute | Op::MmaSync { .. } | Op::Mfma { .. } | Op::Wmma { .. } => {
                true
            }
            Op::Ptx(p) => p.meets(),
        }
    }
}

/// The thread an operation runs in, and its block.
pub struct Lane<'a> {
    pub tid: u32,
    pub block: u32,
    pub blocks: u32,
    pub block_threads: u32,
    /// Threads per warp (NVIDIA, RDNA) or wavefront (CDNA).
    pub warp: u32,
    pub sync: &'a BlockSync,
    /// The block's shared memory: the emulator's window, where the kernel's shared buffers
    /// were placed.
    pub shared: &'a [u8],
    /// Its accesses since the last barrier, for finding races.
    pub shadow: &'a Shadow,
    /// The instruction running (its operation's number in the module).
    pub site: u32,
    /// The barrier epoch the block began in.
    pub block_start: u64,
}

/// The block failed (another thread said why): the operation's results do not matter.
pub const BLOCK_FAILED: &str = "(the block failed)";

impl Lane<'_> {
    /// Reads `len` bytes of shared memory at `offset` (checked for races with other threads'
    /// writes since the last barrier).
    pub fn read_shared(&self, offset: usize, len: usize) -> Result<&[u8], String> {
        let bytes = self
            .shared
            .get(offset..offset + len)
            .ok_or_else(|| format!("reads shared byte {offset}, beyond shared memory ({} bytes)", self.shared.len()))?;
        let access = Access { thread: self.tid, write: false, epoch: self.sync.epoch(), block_start: self.block_start };
        self.shadow.record(offset, len, access).map_err(|conflict| match conflict {
            Conflict::Race { byte, other, .. } => {
                format!("reads shared byte {byte} after thread {other} wrote it, with no barrier between (a race)")
            }
            Conflict::Unwritten { byte } => {
                format!("reads shared byte {byte}, which no thread of the block has written")
            }
        })?;
        Ok(bytes)
    }

    /// This thread's lane in its warp.
    pub fn lane(&self) -> u32 {
        self.tid % self.warp
    }

    /// Exchanges `values` with the `size` threads of this thread's group (aligned to `size`),
    /// every one of which must take part.
    pub fn exchange(&self, size: u32, values: Vec<u64>) -> Result<Vec<Vec<u64>>, String> {
        let all = self.exchange_active(size, values, false)?;
        Ok(all.into_iter().map(|v| v.expect("every lane of a full exchange")).collect())
    }

    /// Exchanges `values` with the threads of this thread's group of `size`; with `partial`,
    /// lanes waiting elsewhere do not take part (`None`).
    pub fn exchange_active(&self, size: u32, values: Vec<u64>, partial: bool) -> Result<Exchanged, String> {
        let first = self.tid / size * size;
        self.sync
            .meet(self.tid, Meeting::Group { first, size, partial, site: self.site }, values)
            .ok_or_else(|| BLOCK_FAILED.to_string())
    }
}

/// Runs `op` in `lane` on the argument slots `args`; returns the result slots.
pub fn run(op: &Op, lane: &Lane, args: &[u64]) -> Result<Vec<u64>, String> {
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{op:?} takes {n} operand values, the call gives {}", args.len()))
        }
    };
    match op {
        Op::ThreadId => Ok(vec![lane.tid.into()]),
        Op::BlockId => Ok(vec![lane.block.into()]),
        Op::BlockDim => Ok(vec![lane.block_threads.into()]),
        Op::GridDim => Ok(vec![lane.blocks.into()]),
        Op::Barrier => {
            lane.sync.meet(lane.tid, Meeting::Barrier, Vec::new()).ok_or(BLOCK_FAILED)?;
            Ok(Vec::new())
        }
        Op::Shuffle(mode) => {
            arity(4)?;
            shuffle(*mode, lane, args)
        }
        Op::Bpermute => {
            // The lanes of the wavefront that run it (its execution mask) take part.
            arity(2)?;
            let all = lane.exchange_active(lane.warp, vec![args[1]], true)?;
            let source = (args[0] as u32 >> 2) % lane.warp;
            match &all[source as usize] {
                Some(v) => Ok(vec![v[0]]),
                None => Err(format!(
                    "ds_bpermute in lane {} reads lane {source}, which is inactive (its value is undefined)",
                    lane.lane()
                )),
            }
        }
        Op::MbcntLo | Op::MbcntHi => {
            arity(2)?;
            let l = lane.lane();
            let below = if matches!(op, Op::MbcntLo) { l.min(32) } else { l.saturating_sub(32) };
            let mask = args[0] as u32 & ((1u64 << below) - 1) as u32;
            Ok(vec![u64::from((args[1] as u32).wrapping_add(mask.count_ones()))])
        }
        Op::MmaSync { bf16 } => mma_sync(*bf16, lane, args),
        Op::Mfma { bf16 } => {
            arity(15)?;
            if args[12..15].iter().any(|&x| x != 0) {
                return Err("MFMA with broadcast controls (cbsz, abid, blgp) is not emulated".into());
            }
            mfma(*bf16, lane, args)
        }
        Op::Wmma { bf16 } => {
            arity(40)?;
            wmma(*bf16, lane, args)
        }
        Op::Ptx(program) => program.run(lane, args),
    }
}

/// PTX `shfl.sync` as the ISA defines it: the source lane from the mode, the clamp value
/// (low 5 bits) and the segment mask (bits 8..13); out-of-segment lanes read their own value.
fn shuffle(mode: ShuffleMode, lane: &Lane, args: &[u64]) -> Result<Vec<u64>, String> {
    let (mask, value, b, c) = (args[0] as u32, args[1], args[2] as u32 & 0x1f, args[3] as u32);
    if lane.warp != 32 || mask != u32::MAX {
        return Err(format!("shfl.sync with member mask {mask:#x} (only whole warps are emulated)"));
    }
    let all = lane.exchange(32, vec![value])?;
    let l = lane.lane();
    let (clamp, segment) = (c & 0x1f, (c >> 8) & 0x1f);
    let max_lane = (l & segment) | (clamp & !segment);
    let min_lane = l & segment;
    let (j, valid) = match mode {
        ShuffleMode::Up => {
            let j = l as i64 - b as i64;
            (j, j >= max_lane as i64)
        }
        ShuffleMode::Down => {
            let j = (l + b) as i64;
            (j, j <= max_lane as i64)
        }
        ShuffleMode::Butterfly => {
            let j = (l ^ b) as i64;
            (j, j <= max_lane as i64)
        }
        ShuffleMode::Index => {
            let j = (min_lane | (b & !segment)) as i64;
            (j, j <= max_lane as i64)
        }
    };
    let source = if valid { j as usize } else { l as usize };
    Ok(vec![all[source][0]])
}

/// A 16-bit float's value from its bits.
pub fn half_value(bits: u64, bf16: bool) -> f32 {
    if bf16 {
        half::bf16::from_bits(bits as u16).to_f32()
    } else {
        half::f16::from_bits(bits as u16).to_f32()
    }
}

/// `c + Σ_k a(k)·b(k)` over `k = 0..depth` in f32 (a product of two 16-bit floats is exact in
/// f32), in order of `k`.
pub fn dot(c: f32, depth: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
    (0..depth).fold(c, |acc, k| acc + a(k) * b(k))
}

fn f32_slot(x: f32) -> u64 {
    u64::from(x.to_bits())
}

fn slot_f32(x: u64) -> f32 {
    f32::from_bits(x as u32)
}

/// `mma.sync.aligned.m16n8k16.row.col` (PTX ISA, "Matrix fragments for mma.m16n8k16"): lane
/// `l` of group `g = l / 4`, `t = l % 4` holds A (16 × 16) elements `a0..a7` at rows
/// `g + 8·(i / 2 % 2)`, columns `2t + i % 2 + 8·(i / 4)`; B (16 × 8) elements `b0..b3` at rows
/// `2t + i % 2 + 8·(i / 2)`, column `g`; C and D (16 × 8, f32) `c0..c3` at rows
/// `g + 8·(i / 2)`, columns `2t + i % 2`. Operands: A as four registers of two 16-bit values
/// (f16: `<2 x half>`, two slots each; bf16: one `i32` slot each, the first value in the low
/// half), B as two, C as four f32.
fn mma_sync(bf16: bool, lane: &Lane, args: &[u64]) -> Result<Vec<u64>, String> {
    let (a, b, c) = if bf16 {
        if args.len() != 10 {
            return Err(format!("bf16 mma.sync takes 10 operand values, the call gives {}", args.len()));
        }
        let unpack =
            |words: &[u64]| -> Vec<u64> { words.iter().flat_map(|&w| [w & 0xffff, (w >> 16) & 0xffff]).collect() };
        (unpack(&args[0..4]), unpack(&args[4..6]), args[6..10].to_vec())
    } else {
        if args.len() != 16 {
            return Err(format!("f16 mma.sync takes 16 operand values, the call gives {}", args.len()));
        }
        (args[0..8].to_vec(), args[8..12].to_vec(), args[12..16].to_vec())
    };
    if lane.warp != 32 {
        return Err("mma.sync needs warps of 32".into());
    }
    let mine: Vec<u64> = a.iter().chain(&b).chain(&c).copied().collect();
    let all = lane.exchange(32, mine)?;
    let a_at = |row: usize, k: usize| {
        let (g, t) = (row % 8, (k % 8) / 2);
        let i = k % 2 + 2 * (row / 8) + 4 * (k / 8);
        half_value(all[g * 4 + t][i], bf16)
    };
    let b_at = |k: usize, col: usize| {
        let (g, t) = (col, (k % 8) / 2);
        let i = k % 2 + 2 * (k / 8);
        half_value(all[g * 4 + t][8 + i], bf16)
    };
    let (g, t) = ((lane.lane() / 4) as usize, (lane.lane() % 4) as usize);
    Ok((0..4)
        .map(|i| {
            let (row, col) = (g + 8 * (i / 2), 2 * t + i % 2);
            f32_slot(dot(slot_f32(c[i]), 16, |k| a_at(row, k), |k| b_at(k, col)))
        })
        .collect())
}

/// `v_mfma_f32_16x16x16f16` / `_bf16_1k` on a wavefront of 64 (AMD's matrix instruction
/// tables): lane `l` holds A elements `A[l % 16][4·(l / 16) + i]`, B elements
/// `B[4·(l / 16) + i][l % 16]` and D elements `D[4·(l / 16) + i][l % 16]`, `i = 0..4`.
/// Operands: A and B as four 16-bit values each, C as four f32, then cbsz, abid, blgp.
fn mfma(bf16: bool, lane: &Lane, args: &[u64]) -> Result<Vec<u64>, String> {
    if lane.warp != 64 {
        return Err("MFMA needs wavefronts of 64".into());
    }
    let all = lane.exchange(64, args[0..8].to_vec())?;
    let a_at = |row: usize, k: usize| half_value(all[row + 16 * (k / 4)][k % 4], bf16);
    let b_at = |k: usize, col: usize| half_value(all[col + 16 * (k / 4)][4 + k % 4], bf16);
    let l = lane.lane() as usize;
    Ok((0..4)
        .map(|i| {
            let (row, col) = (4 * (l / 16) + i, l % 16);
            f32_slot(dot(slot_f32(args[8 + i]), 16, |k| a_at(row, k), |k| b_at(k, col)))
        })
        .collect())
}

/// RDNA 3 `v_wmma_f32_16x16x16_{f16,bf16}` on a wavefront of 32 (AMD's "WMMA on RDNA 3"):
/// lane `l` holds row `l % 16` of A and column `l % 16` of B, all 16 values (lanes 16..32
/// must hold the same values as lanes 0..16), and D elements `D[2i + l / 16][l % 16]`,
/// `i = 0..8`. Operands: A and B as 16 values each, C as eight f32.
fn wmma(bf16: bool, lane: &Lane, args: &[u64]) -> Result<Vec<u64>, String> {
    if lane.warp != 32 {
        return Err("WMMA (wave32) needs wavefronts of 32".into());
    }
    let all = lane.exchange(32, args[0..32].to_vec())?;
    let l = lane.lane() as usize;
    if l < 16 && all[l] != all[l + 16] {
        return Err(format!(
            "WMMA operands differ between lanes {l} and {}: RDNA 3 reads A and B from lanes 0..16 and requires lanes 16..32 to repeat them",
            l + 16
        ));
    }
    let a_at = |row: usize, k: usize| half_value(all[row][k], bf16);
    let b_at = |k: usize, col: usize| half_value(all[col][16 + k], bf16);
    Ok((0..8)
        .map(|i| {
            let (row, col) = (2 * i + l / 16, l % 16);
            f32_slot(dot(slot_f32(args[32 + i]), 16, |k| a_at(row, k), |k| b_at(k, col)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intrinsics_are_recognized_by_name() {
        assert!(matches!(Op::of_intrinsic("llvm.nvvm.shfl.sync.bfly.f32"), Some(Op::Shuffle(ShuffleMode::Butterfly))));
        assert!(matches!(Op::of_intrinsic("llvm.nvvm.shfl.sync.idx.i32"), Some(Op::Shuffle(ShuffleMode::Index))));
        assert!(matches!(
            Op::of_intrinsic("llvm.amdgcn.wmma.f32.16x16x16.bf16.v8f32.v16i16"),
            Some(Op::Wmma { bf16: true })
        ));
        assert!(matches!(Op::of_intrinsic("llvm.nvvm.mma.m16n8k16.row.col.bf16"), Some(Op::MmaSync { bf16: true })));
        assert!(Op::of_intrinsic("llvm.nvvm.shfl.sync.sideways.f32").is_none());
        assert!(Op::of_intrinsic("llvm.amdgcn.readfirstlane").is_none());
    }
}
