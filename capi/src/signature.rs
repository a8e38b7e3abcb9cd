//! The model's signature as the C API hands it out: names, dtype codes, shapes with -1 for
//! symbolic dims, and each dim's text and range, computed once at load so that the pointers in
//! `kiln_tensor_info` and `kiln_dim` stay valid as long as the model.

use std::ffi::CString;

use kiln_runtime::manifest::{ElemType, SizeExpr, SymbolSpec, TensorSpec};

pub const KILN_DTYPE_F32: i32 = 0;
pub const KILN_DTYPE_F64: i32 = 1;
pub const KILN_DTYPE_F16: i32 = 2;
pub const KILN_DTYPE_BF16: i32 = 3;
pub const KILN_DTYPE_I64: i32 = 4;
pub const KILN_DTYPE_I32: i32 = 5;
pub const KILN_DTYPE_I16: i32 = 6;
pub const KILN_DTYPE_I8: i32 = 7;
pub const KILN_DTYPE_U8: i32 = 8;
pub const KILN_DTYPE_BOOL: i32 = 9;

/// Every dtype: its `KILN_DTYPE_*` code, element type and NUL-terminated name.
pub const DTYPES: [(i32, ElemType, &str); 10] = [
    (KILN_DTYPE_F32, ElemType::F32, "f32\0"),
    (KILN_DTYPE_F64, ElemType::F64, "f64\0"),
    (KILN_DTYPE_F16, ElemType::F16, "f16\0"),
    (KILN_DTYPE_BF16, ElemType::Bf16, "bf16\0"),
    (KILN_DTYPE_I64, ElemType::I64, "i64\0"),
    (KILN_DTYPE_I32, ElemType::I32, "i32\0"),
    (KILN_DTYPE_I16, ElemType::I16, "i16\0"),
    (KILN_DTYPE_I8, ElemType::I8, "i8\0"),
    (KILN_DTYPE_U8, ElemType::U8, "u8\0"),
    (KILN_DTYPE_BOOL, ElemType::Bool, "bool\0"),
];

pub fn dtype_of_code(code: i32) -> Option<ElemType> {
    DTYPES.iter().find(|d| d.0 == code).map(|d| d.1)
}

pub fn code_of_dtype(t: ElemType) -> i32 {
    DTYPES.iter().find(|d| d.1 == t).map_or(-1, |d| d.0)
}

/// The NUL-terminated name of a dtype code.
pub fn dtype_name(code: i32) -> Option<&'static str> {
    DTYPES.iter().find(|d| d.0 == code).map(|d| d.2)
}

/// A C string from text that may hold NULs (shown as `\0`).
pub fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// One dim: its size (-1 if symbolic), its text and its range (-1: unknown / unbounded).
pub struct DimInfo {
    pub size: i64,
    pub expr: CString,
    pub min: i64,
    pub max: i64,
}

/// One input or output.
pub struct TensorInfo {
    pub name: CString,
    pub dtype: i32,
    pub shape: Vec<i64>,
    pub dims: Vec<DimInfo>,
}

impl TensorInfo {
    pub fn new(spec: &TensorSpec, symbols: &[SymbolSpec]) -> TensorInfo {
        let dims: Vec<DimInfo> = spec.shape.iter().map(|d| dim_info(d, symbols)).collect();
        TensorInfo {
            name: c_string(&spec.name),
            dtype: code_of_dtype(spec.dtype),
            shape: dims.iter().map(|d| d.size).collect(),
            dims,
        }
    }
}

/// The range of `e` over the symbols' ranges when `e` is monotone in every symbol (all
/// coefficients and minima non-negative); -1 for what is not known.
fn dim_info(e: &SizeExpr, symbols: &[SymbolSpec]) -> DimInfo {
    let expr = c_string(&e.to_text(symbols));
    if let Some(v) = e.as_const() {
        return DimInfo { size: v, expr, min: v, max: v };
    }
    let monotone = e
        .terms
        .iter()
        .all(|(mono, c)| *c >= 0 && mono.iter().all(|&s| symbols.get(s as usize).is_some_and(|s| s.min >= 0)));
    let (mut min, mut max) = (-1, -1);
    if monotone {
        let mins: Vec<i64> = symbols.iter().map(|s| s.min).collect();
        min = e.eval(&mins).unwrap_or(-1);
        let bounded = e.terms.iter().flat_map(|(mono, _)| mono).all(|&s| symbols[s as usize].max.is_some());
        let maxes: Vec<i64> = symbols.iter().map(|s| s.max.unwrap_or(0)).collect();
        max = if bounded { e.eval(&maxes).unwrap_or(-1) } else { -1 };
    }
    DimInfo { size: -1, expr, min, max }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_round_trip() {
        for (code, t, name) in DTYPES {
            assert_eq!(dtype_of_code(code), Some(t));
            assert_eq!(code_of_dtype(t), code);
            assert_eq!(dtype_name(code), Some(name));
            assert_eq!(name.strip_suffix('\0'), Some(format!("{t:?}").to_lowercase().as_str()));
        }
        let codes: Vec<i32> = DTYPES.iter().map(|d| d.0).collect();
        assert_eq!(codes, (0..10).collect::<Vec<i32>>());
        assert_eq!(dtype_of_code(-1), None);
        assert_eq!(dtype_of_code(10), None);
    }

    #[test]
    fn dims() {
        let syms = [
            SymbolSpec { name: "batch".into(), min: 1, max: Some(64) },
            SymbolSpec { name: "seq".into(), min: 2, max: None },
        ];
        let d = dim_info(&SizeExpr::constant(16), &syms);
        assert_eq!((d.size, d.expr.to_str().unwrap(), d.min, d.max), (16, "16", 16, 16));
        let d = dim_info(&SizeExpr { terms: vec![(vec![0], 2), (vec![], 1)] }, &syms);
        assert_eq!((d.size, d.expr.to_str().unwrap(), d.min, d.max), (-1, "2*batch + 1", 3, 129));
        let d = dim_info(&SizeExpr { terms: vec![(vec![1], 1)] }, &syms);
        assert_eq!((d.size, d.expr.to_str().unwrap(), d.min, d.max), (-1, "seq", 2, -1));
        let d = dim_info(&SizeExpr { terms: vec![(vec![0], 1), (vec![], -1)] }, &syms);
        assert_eq!((d.size, d.min, d.max), (-1, -1, -1), "not monotone: unknown");
    }
}
