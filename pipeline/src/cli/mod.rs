//! The `verdict` commands, one module each: what a user types, turned into
//! calls of the library. No decision logic lives here.

pub mod backtest;
pub mod demo;
pub mod features;
pub mod model;
pub mod replay;
pub mod rules;
pub mod run;
