//! Every supported form of the attribute macros compiles, and what they declare is what the
//! runtime reads. (The misuses and their errors are in `compiletest.rs`.) The forms are built
//! with the rest of the tests rather than one trybuild binary each, which linked a copy of the
//! runtime per form.

// The forms declare services, clients and functions that only need to compile.
#![allow(dead_code)]

mod cfg_handler;
mod cron;
mod input_named_context;
mod legacy_client_names;
mod object;
mod option_input;
mod options;
mod raw_input;
mod self_type;
mod service;
mod workflow;
