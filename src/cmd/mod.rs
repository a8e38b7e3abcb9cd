//! One module per subcommand.

pub mod inspect;
pub mod ops;
pub mod run;
