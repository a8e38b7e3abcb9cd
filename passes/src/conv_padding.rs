//! Explicit convolution padding: a convolution with zero padding `p` becomes a `pad` of its
//! input by `p` followed by the same convolution without padding.
//!
//! Why: kernels then read every tap of a convolution's interior without bounds checks. The
//! padded input is its own buffer (a convolution reads each input element many times, so its
//! operand is materialized anyway), and the convolution's rows become plain contiguous loops —
//! no masked edge loops, which dominate the time of convolutions over small images. The price
//! is one copy of the input with its border, the size of the input plus the border.
//!
//! What it does not do: transposed convolutions (their padding crops the output) and pooling
//! (its padding is not zero) keep their padding. Exact: the padded zeros are the values the
//! convolution's padding stands for, and the sum over taps runs in the same order.

use crate::error::{check_input, PassError};
use crate::rebuild::Rebuild;
use kiln_ir::{ConvAttrs, Graph, Op};

const PASS: &str = "conv_padding";

/// Moves the zero padding of every (non-transposed) convolution into a `pad` of its input.
pub fn explicit_conv_padding(graph: &Graph) -> Result<Graph, PassError> {
    check_input(PASS, graph)?;
    let mut b = Rebuild::new(graph);
    b.copy_inputs();
    b.copy_weights();
    for (_, node) in graph.nodes() {
        let mut inputs = b.operands(node);
        match &node.op {
            Op::Conv(a) if !a.transposed && a.padding.iter().any(|&p| p > 0) => {
                let mut pads = vec![(0, 0); 2];
                pads.extend(a.padding.iter().map(|&p| (p, p)));
                let name = b.new.fresh_name(&format!("{}.pad", graph.value(node.output).name));
                let padded = b
                    .new
                    .add_node(Op::Pad { pads, value: 0.0 }, vec![inputs[0]], &name, node.source.clone())
                    .map_err(|source| PassError::Verify { pass: PASS, source })?;
                inputs[0] = padded;
                let op = Op::Conv(ConvAttrs { padding: vec![0; a.padding.len()], ..a.clone() });
                b.rewrite_node(PASS, node, op, inputs)?;
            }
            _ => {
                b.copy_node(node, inputs);
            }
        }
    }
    let g = b.finish();
    kiln_ir::verify::verify(&g).map_err(|source| PassError::Verify { pass: PASS, source })?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Dim, TensorType};

    fn t(shape: &[i64]) -> TensorType {
        TensorType::new(DType::F32, shape.iter().map(|&d| Dim::constant(d)).collect())
    }

    #[test]
    fn padding_moves_into_a_pad_node_and_results_match() {
        let mut g = Graph::new("m");
        let x = g.add_input("x", t(&[1, 2, 5, 4]));
        let w = g.add_weight("w", t(&[3, 2, 3, 3]));
        let attrs = ConvAttrs {
            stride: vec![1, 2],
            padding: vec![1, 2],
            dilation: vec![1, 1],
            groups: 1,
            transposed: false,
            output_padding: vec![0, 0],
        };
        let y = g.add_node(Op::Conv(attrs), vec![x, w], "conv", None).unwrap();
        g.add_output("y", y);
        let out = explicit_conv_padding(&g).unwrap();
        let text = kiln_ir::text::print(&out);
        assert!(text.contains("pad{pads=[(0, 0), (0, 0), (1, 1), (2, 2)]"), "{text}");
        assert!(text.contains("padding=[0, 0]"), "{text}");
        assert_eq!(out.ty(out.outputs()[0].1), g.ty(y));
    }
}
