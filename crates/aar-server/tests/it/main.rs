//! Process-level tests: the real server binary, real sockets, a real
//! PostgreSQL server.

mod crash;
mod limits;
mod postgres;
mod store_pg;
mod support;
mod workers;
