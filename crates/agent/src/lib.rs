//! The agent: observe the local PostgreSQL and the store, ask `ha::decide`
//! what to do, do it.

pub mod archive;
pub mod backup_taker;
pub mod bootstrap;
pub mod commit_hold;
pub mod events;
pub mod failsafe;
pub mod hooks;
pub mod member;
pub mod postgres;
pub mod reachability;
pub mod runtime;
pub mod standby_from_backup;
