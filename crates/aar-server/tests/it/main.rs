//! Process-level tests: the real server binary, real sockets, a real
//! PostgreSQL server.

mod crash;
mod postgres;
mod support;
