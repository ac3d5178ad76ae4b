pub mod agent;
pub mod config_check;
pub mod demo;
pub mod proxy;
