pub mod agent;
pub mod config_check;
pub mod ctl;
pub mod demo;
pub mod proxy;
pub mod restore;
pub mod wal;
