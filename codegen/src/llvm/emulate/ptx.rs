//! The inline PTX of kiln's kernels, parsed and run: Hopper's warpgroup matrix instructions
//! (`wgmma.mma_async` m64nNk16 with f32 accumulators, operands read by descriptor from
//! shared memory) and the fences and group waits around them. Anything else is refused when
//! the module loads, so the emulator never skips an instruction it does not know.
//!
//! The semantics follow the PTX ISA (8.0): a matrix descriptor holds the start address
//! (bits 0..14, in 16-byte units), the leading-dimension byte offset (bits 16..30) and the
//! stride-dimension byte offset (bits 32..46), the base offset (bits 49..52) and the swizzle
//! mode (bits 62..64); for K-major operands without swizzling, an 8 × 8 "core matrix" is 8
//! rows of 16 contiguous bytes, core matrices adjacent in K are the leading offset apart and
//! those adjacent in M (or N) the stride offset. The accumulator fragment of warp `w` of the
//! warpgroup, lane group `g = lane / 4`, `t = lane % 4`: register `i` holds
//! `D[16w + g + 8·(i / 2 % 2)][8·(i / 4) + 2t + i % 2]`.

use super::ops::{dot, half_value, Lane};

/// One parsed instruction.
#[derive(Clone, Debug, PartialEq)]
enum Instruction {
    /// Orders memory or asynchronous operations; nothing to do when every operation is
    /// complete when it returns.
    Fence,
    Wgmma(Wgmma),
}

#[derive(Clone, Debug, PartialEq)]
struct Wgmma {
    n: usize,
    bf16: bool,
    /// The accumulator registers (operand numbers).
    d: Vec<usize>,
    a: usize,
    b: usize,
    /// Whether D accumulates (`scale-d` 1) or is overwritten (0).
    accumulate: bool,
}

/// An inline-PTX block with its operands: outputs, inputs and which inputs are tied to
/// (initialize) which outputs, from the constraint string.
#[derive(Clone, Debug)]
pub struct PtxProgram {
    instructions: Vec<Instruction>,
    outputs: usize,
    inputs: usize,
    /// For each output, the input it is tied to.
    tied: Vec<Option<usize>>,
}

/// Splits `text` into instructions (statements end with `;`; braces open and close scopes).
fn statements(text: &str) -> impl Iterator<Item = &str> {
    text.split(';')
        .map(|s| s.trim_matches(|c: char| c.is_whitespace() || c == '{' || c == '}'))
        .filter(|s| !s.is_empty())
}

fn operand_number(s: &str) -> Result<usize, String> {
    s.trim().strip_prefix('$').and_then(|n| n.parse().ok()).ok_or_else(|| format!("`{s}` is not an operand"))
}

fn parse_wgmma(opcode: &str, operands: &str) -> Result<Wgmma, String> {
    let shape_types = opcode
        .strip_prefix("wgmma.mma_async.sync.aligned.m64n")
        .ok_or_else(|| format!("`{opcode}`: only wgmma.mma_async.sync.aligned.m64nNk16 is emulated"))?;
    let (n, types) = shape_types.split_once("k16.").ok_or_else(|| format!("`{opcode}`: only k16 is emulated"))?;
    let n: usize = n.parse().map_err(|_| format!("`{opcode}`: bad shape"))?;
    let bf16 = match types {
        "f32.f16.f16" => false,
        "f32.bf16.bf16" => true,
        _ => return Err(format!("`{opcode}`: only f32 accumulators of f16 or bf16 products are emulated")),
    };
    let (d, rest) = operands
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.split_once('}'))
        .ok_or_else(|| format!("`{operands}`: the accumulators are not a register list"))?;
    let d: Vec<usize> = d.split(',').map(operand_number).collect::<Result<_, _>>()?;
    if d.len() != n / 2 {
        return Err(format!("`{opcode}` has {} accumulators, not {}", d.len(), n / 2));
    }
    let rest: Vec<&str> = rest.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let [a, b, scale_d, scale_a, scale_b, trans_a, trans_b] = rest[..] else {
        return Err(format!(
            "`{operands}`: expected a-desc, b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-a, imm-trans-b"
        ));
    };
    if [scale_a, scale_b] != ["1", "1"] || [trans_a, trans_b] != ["0", "0"] {
        return Err(format!("`{operands}`: only unscaled (1), untransposed (0) operands are emulated"));
    }
    let accumulate = match scale_d {
        "1" => true,
        "0" => false,
        _ => return Err(format!("`{scale_d}`: only an immediate scale-d is emulated")),
    };
    Ok(Wgmma { n, bf16, d, a: operand_number(a)?, b: operand_number(b)?, accumulate })
}

impl PtxProgram {
    /// Parses inline PTX `text` with LLVM constraints `constraints` (`=f,...,l,...,0,...`).
    pub fn parse(text: &str, constraints: &str) -> Result<PtxProgram, String> {
        let mut outputs = 0;
        let mut tied_inputs = Vec::new();
        let mut inputs = 0;
        for c in constraints.split(',') {
            if c.starts_with('=') {
                outputs += 1;
            } else if c.starts_with('~') {
                continue;
            } else {
                if let Ok(output) = c.parse::<usize>() {
                    tied_inputs.push((output, inputs));
                }
                inputs += 1;
            }
        }
        let mut tied = vec![None; outputs];
        for (output, input) in tied_inputs {
            *tied.get_mut(output).ok_or_else(|| format!("constraint ties an input to output {output}"))? = Some(input);
        }
        let mut instructions = Vec::new();
        for s in statements(text) {
            let (opcode, operands) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
            let instruction = match opcode {
                "wgmma.fence.sync.aligned" | "wgmma.commit_group.sync.aligned" | "fence.proxy.async.shared::cta" => {
                    Instruction::Fence
                }
                "wgmma.wait_group.sync.aligned" => {
                    if operands.trim() != "0" {
                        return Err(format!("`{s}`: only waiting for every group (0) is emulated"));
                    }
                    Instruction::Fence
                }
                _ if opcode.starts_with("wgmma.mma_async") => Instruction::Wgmma(parse_wgmma(opcode, operands)?),
                _ => return Err(format!("the emulator does not know the PTX instruction `{s}`")),
            };
            instructions.push(instruction);
        }
        let program = PtxProgram { instructions, outputs, inputs, tied };
        for i in &program.instructions {
            if let Instruction::Wgmma(w) = i {
                if w.d.iter().any(|&r| r >= outputs) || w.a.max(w.b) >= outputs + inputs {
                    return Err(format!("{w:?} names operands beyond the asm's {outputs} outputs and {inputs} inputs"));
                }
            }
        }
        Ok(program)
    }

    /// Whether the program exchanges values between threads (a warpgroup's `wgmma`).
    pub fn meets(&self) -> bool {
        self.instructions.iter().any(|i| matches!(i, Instruction::Wgmma(_)))
    }

    /// Runs the program in `lane` with input slots `args`; returns the output slots.
    pub fn run(&self, lane: &Lane, args: &[u64]) -> Result<Vec<u64>, String> {
        if args.len() != self.inputs {
            return Err(format!("inline PTX of {} inputs called with {}", self.inputs, args.len()));
        }
        // Operand k < outputs is output register k (starting as its tied input's value);
        // operand k ≥ outputs is input k - outputs.
        let mut regs: Vec<u64> = self.tied.iter().map(|t| t.map_or(0, |i| args[i])).collect();
        regs.extend_from_slice(args);
        for i in &self.instructions {
            if let Instruction::Wgmma(w) = i {
                let d: Vec<u64> = w.d.iter().map(|&r| regs[r]).collect();
                let out = wgmma(w, lane, regs[w.a], regs[w.b], &d)?;
                for (&r, v) in w.d.iter().zip(out) {
                    regs[r] = v;
                }
            }
        }
        regs.truncate(self.outputs);
        Ok(regs)
    }
}

/// A decoded matrix descriptor (K-major, no swizzle).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Descriptor {
    start: usize,
    leading: usize,
    stride: usize,
}

fn decode(desc: u64) -> Result<Descriptor, String> {
    let field = |at: u32| ((desc >> at) & 0x3fff) as usize * 16;
    let base_offset = (desc >> 49) & 0x7;
    let swizzle = desc >> 62;
    if base_offset != 0 || swizzle != 0 {
        return Err(format!(
            "matrix descriptor {desc:#x}: base offset {base_offset}, swizzle mode {swizzle} (only 0, 0 is emulated)"
        ));
    }
    Ok(Descriptor { start: field(0), leading: field(16), stride: field(32) })
}

impl Descriptor {
    /// Where the element at `(row, k)` of a K-major operand lies, in bytes from the start of
    /// shared memory.
    fn offset(&self, row: usize, k: usize) -> usize {
        self.start + (row / 8) * self.stride + (k / 8) * self.leading + (row % 8) * 16 + (k % 8) * 2
    }

    /// The 16-bit element at `(row, k)`, read by `lane`.
    fn element(&self, lane: &Lane, row: usize, k: usize, bf16: bool) -> Result<f32, String> {
        let bytes = lane.read_shared(self.offset(row, k), 2).map_err(|e| format!("wgmma (descriptor {self:?}) {e}"))?;
        Ok(half_value(u64::from(u16::from_le_bytes([bytes[0], bytes[1]])), bf16))
    }
}

/// One `wgmma.mma_async` m64nNk16 of this lane's warpgroup: the descriptors must be the same
/// in its 128 threads.
fn wgmma(w: &Wgmma, lane: &Lane, a_desc: u64, b_desc: u64, d: &[u64]) -> Result<Vec<u64>, String> {
    let all = lane.exchange(128, vec![a_desc, b_desc])?;
    if let Some(other) = all.iter().find(|v| v[..] != [a_desc, b_desc]) {
        return Err(format!(
            "wgmma descriptors differ within a warpgroup: {a_desc:#x}, {b_desc:#x} and {:#x}, {:#x}",
            other[0], other[1]
        ));
    }
    let (a, b) = (decode(a_desc)?, decode(b_desc)?);
    let in_group = lane.tid % 128;
    let (warp, g, t) = ((in_group / 32) as usize, (in_group % 32 / 4) as usize, (in_group % 4) as usize);
    // Read A's 16 rows and B's columns this lane needs, then multiply.
    let mut out = Vec::with_capacity(d.len());
    for (i, &c) in d.iter().enumerate() {
        let row = 16 * warp + g + 8 * (i / 2 % 2);
        let col = 8 * (i / 4) + 2 * t + i % 2;
        if col >= w.n {
            return Err(format!("accumulator {i} lies beyond n = {}", w.n));
        }
        let a_row: Vec<f32> = (0..16).map(|k| a.element(lane, row, k, w.bf16)).collect::<Result<_, _>>()?;
        let b_col: Vec<f32> = (0..16).map(|k| b.element(lane, col, k, w.bf16)).collect::<Result<_, _>>()?;
        let c = if w.accumulate { f32::from_bits(c as u32) } else { 0.0 };
        out.push(u64::from(dot(c, 16, |k| a_row[k], |k| b_col[k]).to_bits()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILN_WGMMA: &str = "{\n\twgmma.fence.sync.aligned;\n\twgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {$0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15}, $16, $17, 1, 1, 1, 0, 0;\n\twgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;\n}";

    #[test]
    fn kilns_wgmma_block_parses_with_its_tied_accumulators() {
        let constraints = format!(
            "{},l,l,{},~{{memory}}",
            vec!["=f"; 16].join(","),
            (0..16).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        );
        let p = PtxProgram::parse(KILN_WGMMA, &constraints).unwrap();
        assert_eq!((p.outputs, p.inputs), (16, 18));
        assert_eq!(p.tied[3], Some(5));
        let wgmmas: Vec<_> = p.instructions.iter().filter(|i| matches!(i, Instruction::Wgmma(_))).collect();
        let Instruction::Wgmma(w) = wgmmas[0] else { unreachable!() };
        assert_eq!((w.n, w.bf16, w.a, w.b, w.accumulate, w.d.len()), (32, false, 16, 17, true, 16));
        assert_eq!(p.instructions.len(), 4);
    }

    #[test]
    fn unknown_ptx_is_refused() {
        let e = PtxProgram::parse("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {$0, $1, $2, $3}, [$4];", "=r,=r,=r,=r,l")
            .unwrap_err();
        assert!(e.contains("does not know the PTX instruction `ldmatrix"), "{e}");
        let e = PtxProgram::parse("wgmma.wait_group.sync.aligned 1;", "").unwrap_err();
        assert!(e.contains("only waiting for every group"), "{e}");
    }

    #[test]
    fn descriptors_decode_their_fields() {
        let desc = (32u64 << 32) | (8 << 16) | 0x123;
        assert_eq!(decode(desc).unwrap(), Descriptor { start: 0x1230, leading: 128, stride: 512 });
        assert!(decode(desc | (1 << 62)).unwrap_err().contains("swizzle mode 1"));
        // Row 9, k 10: second core matrix in both directions, row 1, column 2 inside it.
        let d = Descriptor { start: 0, leading: 128, stride: 512 };
        assert_eq!(d.offset(9, 10), 512 + 128 + 16 + 4);
        assert_eq!(d.offset(7, 7), 7 * 16 + 7 * 2);
        assert_eq!(Descriptor { start: 0x1230, ..d }.offset(8, 0), 0x1230 + 512);
    }
}
