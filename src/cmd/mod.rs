//! One module per subcommand.

pub mod bench;
pub mod compare;
pub mod compile;
pub mod inspect;
pub mod ops;
pub mod run;
