//! Integration tests: the real sandbox (bubblewrap), the LLM client against a
//! local server speaking the Anthropic wire protocol, and the agent loop
//! against a real research server started in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod llm;
mod python;
mod sandbox;
mod support;
mod tools;
