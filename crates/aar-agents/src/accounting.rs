//! Tokens, dollars and wall time per agent and per campaign; hard budgets.
//!
//! Money is kept in integer nanodollars, so sums are exact: a price of
//! `$3 / MTok` is 3,000 nanodollars per token.
//!
//! The ledger is one JSON file per campaign, rewritten atomically (temporary
//! file, fsync, rename) after every step. A JSON file rather than SQLite
//! because the state is a few numbers per agent with one writer process,
//! because it must not pull SQL into this crate (`aar-store` is the only crate
//! with SQL), and because a person can read it. Restarting loads it, so
//! spending and elapsed time survive a crash or Ctrl-C; time while nothing
//! runs is not counted.
//!
//! Every token a provider bills is charged: a response's reported usage
//! ([`Ledger::record_llm`]), and what failed attempts were billed
//! ([`Ledger::record_llm_failure`]: a stream cut after it started, a response
//! without usage), where tokens the provider did not report are estimated and
//! counted in [`Totals::estimated_tokens`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::llm::{BilledUsage, Usage};

/// Prices of one model, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Uncached input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Cache writes (5-minute cache).
    pub cache_write: f64,
    /// Cache reads.
    pub cache_read: f64,
}

impl ModelPrice {
    /// Prices with Anthropic's cache multipliers: writes 1.25x, reads 0.1x input.
    pub fn anthropic(input: f64, output: f64) -> ModelPrice {
        ModelPrice {
            input,
            output,
            cache_write: input * 1.25,
            cache_read: input * 0.1,
        }
    }

    /// A model that costs nothing (a local server): usage is counted, never charged.
    pub fn free() -> ModelPrice {
        ModelPrice {
            input: 0.0,
            output: 0.0,
            cache_write: 0.0,
            cache_read: 0.0,
        }
    }

    /// Cost of `usage`, in nanodollars (exact for prices with at most three
    /// decimals per MTok).
    pub fn cost_nanodollars(&self, usage: &Usage) -> u64 {
        let per_token = |dollars_per_mtok: f64| -> u64 {
            // $/MTok * 1e9 n$/$ / 1e6 tok/MTok = n$/token * 1000 / 1000.
            (dollars_per_mtok * 1000.0).round().max(0.0) as u64
        };
        [
            (usage.input_tokens, self.input),
            (usage.output_tokens, self.output),
            (usage.cache_creation_input_tokens, self.cache_write),
            (usage.cache_read_input_tokens, self.cache_read),
        ]
        .into_iter()
        .fold(0u64, |sum, (tokens, price)| {
            sum.saturating_add(tokens.saturating_mul(per_token(price)))
        })
    }
}

/// Prices by model-name prefix; the longest matching prefix wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// `(model-name prefix, price)`.
    pub entries: Vec<(String, ModelPrice)>,
    /// Price of models no prefix matches (`None`: such usage is an error).
    pub fallback: Option<ModelPrice>,
}

impl Default for PriceTable {
    /// Anthropic's list prices (per MTok) as of early 2026.
    fn default() -> PriceTable {
        let entries = [
            ("claude-opus-4-6", ModelPrice::anthropic(5.0, 25.0)),
            ("claude-opus-4-5", ModelPrice::anthropic(5.0, 25.0)),
            ("claude-opus-4-1", ModelPrice::anthropic(15.0, 75.0)),
            ("claude-opus-4", ModelPrice::anthropic(15.0, 75.0)),
            ("claude-sonnet-4", ModelPrice::anthropic(3.0, 15.0)),
            ("claude-3-7-sonnet", ModelPrice::anthropic(3.0, 15.0)),
            ("claude-haiku-4", ModelPrice::anthropic(1.0, 5.0)),
            ("claude-3-5-haiku", ModelPrice::anthropic(0.8, 4.0)),
        ];
        PriceTable {
            entries: entries
                .into_iter()
                .map(|(name, price)| (name.to_owned(), price))
                .collect(),
            // Unknown models are priced like the most expensive one, so a
            // budget errs on the side of stopping early.
            fallback: Some(ModelPrice::anthropic(15.0, 75.0)),
        }
    }
}

impl PriceTable {
    /// The defaults without a fallback: a model no prefix matches has no price.
    pub fn strict() -> PriceTable {
        PriceTable {
            fallback: None,
            ..PriceTable::default()
        }
    }

    /// Adds (or replaces) the price of models starting with `prefix`.
    pub fn set(&mut self, prefix: &str, price: ModelPrice) {
        self.entries.retain(|(known, _)| known != prefix);
        self.entries.push((prefix.to_owned(), price));
    }

    /// Adds the entries of a JSON prices file, `{"<model prefix>": {"input": 3.0,
    /// "output": 15.0, "cache_write": 3.75, "cache_read": 0.3}, ...}` in dollars per
    /// million tokens (cache prices default to 0). Errors name the file and the model.
    pub fn extend_from_file(&mut self, path: &Path) -> Result<(), LedgerError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            input: f64,
            output: f64,
            #[serde(default)]
            cache_write: f64,
            #[serde(default)]
            cache_read: f64,
        }
        let bad = |message: String| LedgerError::Prices {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let entries: BTreeMap<String, Entry> = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "{e}; expected {{\"<model prefix>\": {{\"input\": ..., \"output\": ...}}}} \
                 in dollars per million tokens"
            ))
        })?;
        for (prefix, e) in entries {
            let values = [e.input, e.output, e.cache_write, e.cache_read];
            if prefix.is_empty() || values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(bad(format!(
                    "model {prefix:?}: a price is a non-empty prefix with finite prices >= 0"
                )));
            }
            let price = ModelPrice {
                input: e.input,
                output: e.output,
                cache_write: e.cache_write,
                cache_read: e.cache_read,
            };
            self.set(&prefix, price);
        }
        Ok(())
    }

    /// The price of `model`.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        self.entries
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, price)| *price)
            .or(self.fallback)
    }
}

/// Limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Dollars.
    pub dollars: Option<f64>,
    /// Tokens of all four kinds.
    pub tokens: Option<u64>,
    /// Running time.
    pub wall_time: Option<Duration>,
}

/// Per-agent and campaign-wide budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budgets {
    /// Each agent's.
    pub per_agent: Budget,
    /// All agents' together.
    pub campaign: Budget,
}

/// What a total is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One agent.
    Agent,
    /// The campaign.
    Campaign,
}

/// Which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Dollars.
    Dollars,
    /// Tokens.
    Tokens,
    /// Wall time.
    WallTime,
}

/// A budget that is used up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{scope:?} budget for {resource:?} exhausted: used {used}, limit {limit}")]
pub struct BudgetExceeded {
    /// Whose.
    pub scope: Scope,
    /// Which.
    pub resource: Resource,
    /// Used (dollars, tokens or seconds).
    pub used: f64,
    /// The limit, in the same unit.
    pub limit: f64,
}

/// One agent's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Tokens by kind.
    pub usage: Usage,
    /// Cost in nanodollars.
    pub cost_nanodollars: u64,
    /// LLM calls that returned a response.
    pub llm_calls: u64,
    /// LLM attempts that failed after the provider billed them (charged in
    /// `usage` and `cost_nanodollars`).
    #[serde(default)]
    pub failed_llm_calls: u64,
    /// Tokens of `usage` that are estimates, not the provider's count (a failed
    /// stream's output so far, a response without usage).
    #[serde(default)]
    pub estimated_tokens: u64,
    /// Tool calls run.
    pub tool_calls: u64,
    /// Running time, in milliseconds.
    pub active_ms: u64,
}

impl Totals {
    /// Cost in dollars.
    pub fn dollars(&self) -> f64 {
        self.cost_nanodollars as f64 / 1e9
    }

    fn add(&mut self, other: &Totals) {
        self.usage.add(&other.usage);
        self.cost_nanodollars = self.cost_nanodollars.saturating_add(other.cost_nanodollars);
        self.llm_calls += other.llm_calls;
        self.failed_llm_calls += other.failed_llm_calls;
        self.estimated_tokens = self.estimated_tokens.saturating_add(other.estimated_tokens);
        self.tool_calls += other.tool_calls;
        self.active_ms = self.active_ms.saturating_add(other.active_ms);
    }
}

/// The ledger's file content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Campaign running time, in milliseconds.
    pub campaign_ms: u64,
    /// Per agent, by name.
    pub agents: BTreeMap<String, Totals>,
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// I/O.
    #[error("ledger {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a ledger.
    #[error("ledger {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A model without a price.
    #[error("no price for model {0}")]
    NoPrice(String),
    /// A prices file that cannot be read or holds a bad entry.
    #[error("prices file {path}: {message}")]
    Prices {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the model.
        message: String,
    },
}

#[derive(Debug)]
struct Clocks {
    /// When this process opened the ledger.
    opened: Instant,
    /// Campaign time loaded from the file.
    campaign_ms_at_open: u64,
    /// Per agent: last time its active time was brought up to date.
    last_tick: BTreeMap<String, Instant>,
}

/// The campaign's ledger, shared by its agents (cheap to clone).
#[derive(Debug, Clone)]
pub struct Ledger {
    inner: Arc<Mutex<(LedgerState, Clocks)>>,
    path: PathBuf,
    prices: Arc<PriceTable>,
    budgets: Budgets,
}

impl Ledger {
    /// Opens (or starts) the ledger at `path`.
    pub fn open(path: &Path, prices: PriceTable, budgets: Budgets) -> Result<Ledger, LedgerError> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| LedgerError::Parse {
                path: path.to_owned(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LedgerState::default(),
            Err(source) => {
                return Err(LedgerError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let clocks = Clocks {
            opened: Instant::now(),
            campaign_ms_at_open: state.campaign_ms,
            last_tick: BTreeMap::new(),
        };
        Ok(Ledger {
            inner: Arc::new(Mutex::new((state, clocks))),
            path: path.to_owned(),
            prices: Arc::new(prices),
            budgets,
        })
    }

    /// The budgets.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The price table.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (LedgerState, Clocks)> {
        // A panic while holding the lock leaves plain numbers behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts (or resumes) counting `agent`'s running time now.
    pub fn start_agent(&self, agent: &str) {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        state.agents.entry(agent.to_owned()).or_default();
        clocks.last_tick.insert(agent.to_owned(), Instant::now());
    }

    /// Stops counting `agent`'s running time (and saves).
    pub fn stop_agent(&self, agent: &str) -> Result<(), LedgerError> {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        tick(state, clocks, agent);
        clocks.last_tick.remove(agent);
        self.save(state)
    }

    /// Records one LLM response of `agent` by `model`; returns its cost in
    /// nanodollars. Saves the ledger.
    pub fn record_llm(&self, agent: &str, model: &str, usage: &Usage) -> Result<u64, LedgerError> {
        let price = self
            .prices
            .price(model)
            .ok_or_else(|| LedgerError::NoPrice(model.to_owned()))?;
        let cost = price.cost_nanodollars(usage);
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        tick(state, clocks, agent);
        let totals = state.agents.entry(agent.to_owned()).or_default();
        totals.usage.add(usage);
        totals.cost_nanodollars = totals.cost_nanodollars.saturating_add(cost);
        totals.llm_calls += 1;
        self.save(state)?;
        Ok(cost)
    }

    /// Records what failed LLM attempts of `agent` by `model` were billed (see
    /// [`crate::llm::LlmError::Billed`]); returns the cost in nanodollars. Tokens the
    /// provider did not report are estimates, counted in `estimated_tokens` (the agent
    /// loop also warns). Saves the ledger.
    pub fn record_llm_failure(
        &self,
        agent: &str,
        model: &str,
        billed: &BilledUsage,
    ) -> Result<u64, LedgerError> {
        let price = self
            .prices
            .price(model)
            .ok_or_else(|| LedgerError::NoPrice(model.to_owned()))?;
        let cost = price.cost_nanodollars(&billed.usage);
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        tick(state, clocks, agent);
        let totals = state.agents.entry(agent.to_owned()).or_default();
        totals.usage.add(&billed.usage);
        totals.cost_nanodollars = totals.cost_nanodollars.saturating_add(cost);
        totals.failed_llm_calls += u64::from(billed.attempts);
        totals.estimated_tokens = totals
            .estimated_tokens
            .saturating_add(billed.estimated_tokens);
        self.save(state)?;
        Ok(cost)
    }

    /// Records one tool call of `agent`. Saves the ledger.
    pub fn record_tool(&self, agent: &str) -> Result<(), LedgerError> {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        tick(state, clocks, agent);
        state.agents.entry(agent.to_owned()).or_default().tool_calls += 1;
        self.save(state)
    }

    /// `agent`'s totals so far (its running time up to now).
    pub fn agent_totals(&self, agent: &str) -> Totals {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        tick(state, clocks, agent);
        state.agents.get(agent).copied().unwrap_or_default()
    }

    /// All agents' totals added, with the campaign's running time as `active_ms`.
    pub fn campaign_totals(&self) -> Totals {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        update_campaign(state, clocks);
        let mut sum = Totals::default();
        for totals in state.agents.values() {
            sum.add(totals);
        }
        sum.active_ms = state.campaign_ms;
        sum
    }

    /// Brings `agent`'s running time up to date and saves: a process that may be killed
    /// (a scheduler's job) calls this every few seconds, so that a restart counts
    /// nearly all the time spent before it.
    pub fn checkpoint(&self, agent: &str) -> Result<(), LedgerError> {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        tick(state, clocks, agent);
        self.save(state)
    }

    /// Replaces `agent`'s totals with ones counted elsewhere (a researcher running as a
    /// job of its own keeps its own ledger; the campaign's mirrors it) and saves.
    pub fn set_agent_totals(&self, agent: &str, totals: Totals) -> Result<(), LedgerError> {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        update_campaign(state, clocks);
        if state.agents.get(agent) == Some(&totals) {
            return Ok(());
        }
        state.agents.insert(agent.to_owned(), totals);
        self.save(state)
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> LedgerState {
        let mut guard = self.lock();
        let (state, clocks) = &mut *guard;
        update_campaign(state, clocks);
        state.clone()
    }

    /// How long `agent` may still run before its own or the campaign's wall-time budget is
    /// used up (`None` when neither has one): a running tool call is cut there.
    pub fn time_left(&self, agent: &str) -> Option<Duration> {
        let left =
            |limit: Duration, used_ms: u64| limit.saturating_sub(Duration::from_millis(used_ms));
        let own = self
            .budgets
            .per_agent
            .wall_time
            .map(|limit| left(limit, self.agent_totals(agent).active_ms));
        let campaign = self
            .budgets
            .campaign
            .wall_time
            .map(|limit| left(limit, self.campaign_totals().active_ms));
        match (own, campaign) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    /// `Err` when `agent`'s or the campaign's budget is used up.
    pub fn check(&self, agent: &str) -> Result<(), BudgetExceeded> {
        let agent_totals = self.agent_totals(agent);
        check_budget(Scope::Agent, &self.budgets.per_agent, &agent_totals)?;
        check_budget(
            Scope::Campaign,
            &self.budgets.campaign,
            &self.campaign_totals(),
        )
    }

    fn save(&self, state: &mut LedgerState) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| LedgerError::Parse {
            path: self.path.clone(),
            source,
        })?;
        crate::fsutil::atomic_write(&self.path, &bytes).map_err(|source| LedgerError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

fn update_campaign(state: &mut LedgerState, clocks: &Clocks) {
    let since = u64::try_from(clocks.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
    state.campaign_ms = clocks.campaign_ms_at_open.saturating_add(since);
}

fn tick(state: &mut LedgerState, clocks: &mut Clocks, agent: &str) {
    update_campaign(state, clocks);
    if let Some(last) = clocks.last_tick.get_mut(agent) {
        let now = Instant::now();
        let ms = u64::try_from(now.duration_since(*last).as_millis()).unwrap_or(u64::MAX);
        *last = now;
        let totals = state.agents.entry(agent.to_owned()).or_default();
        totals.active_ms = totals.active_ms.saturating_add(ms);
    }
}

fn check_budget(scope: Scope, budget: &Budget, totals: &Totals) -> Result<(), BudgetExceeded> {
    let exceeded = |resource, used: f64, limit: f64| BudgetExceeded {
        scope,
        resource,
        used,
        limit,
    };
    if let Some(limit) = budget.dollars
        && totals.dollars() >= limit
    {
        return Err(exceeded(Resource::Dollars, totals.dollars(), limit));
    }
    if let Some(limit) = budget.tokens
        && totals.usage.total() >= limit
    {
        return Err(exceeded(
            Resource::Tokens,
            totals.usage.total() as f64,
            limit as f64,
        ));
    }
    if let Some(limit) = budget.wall_time
        && Duration::from_millis(totals.active_ms) >= limit
    {
        return Err(exceeded(
            Resource::WallTime,
            totals.active_ms as f64 / 1000.0,
            limit.as_secs_f64(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_in_nanodollars() {
        let price = ModelPrice::anthropic(3.0, 15.0);
        let usage = Usage {
            input_tokens: 1_000,
            output_tokens: 200,
            cache_creation_input_tokens: 400,
            cache_read_input_tokens: 10_000,
        };
        // 1000*3000 + 200*15000 + 400*3750 + 10000*300 n$
        assert_eq!(
            price.cost_nanodollars(&usage),
            3_000_000 + 3_000_000 + 1_500_000 + 3_000_000
        );
    }

    #[test]
    fn a_prices_file_extends_the_strict_table_and_bad_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = PriceTable::strict();
        assert_eq!(
            table.price("qwen2.5-coder-1.5b"),
            None,
            "strict: no fallback"
        );
        let path = dir.path().join("prices.json");
        std::fs::write(
            &path,
            r#"{"qwen2.5": {"input": 0.5, "output": 1.0}, "claude-sonnet-4": {"input": 9, "output": 9}}"#,
        )
        .unwrap();
        table.extend_from_file(&path).unwrap();
        let qwen = table.price("qwen2.5-coder-1.5b").unwrap();
        assert_eq!((qwen.input, qwen.output, qwen.cache_read), (0.5, 1.0, 0.0));
        assert_eq!(table.price("claude-sonnet-4-5").map(|p| p.input), Some(9.0));
        let usage = Usage {
            input_tokens: 2_000_000,
            output_tokens: 1_000_000,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
        };
        assert_eq!(qwen.cost_nanodollars(&usage), 2_000_000_000);
        assert_eq!(ModelPrice::free().cost_nanodollars(&usage), 0);
        for (body, needle) in [
            (r#"{"m": {"input": -1, "output": 1}}"#, "model \"m\""),
            (r#"{"m": {"input": 1}}"#, "missing field `output`"),
            (
                r#"{"m": {"input": 1, "output": 1, "extra": 2}}"#,
                "unknown field `extra`",
            ),
        ] {
            std::fs::write(&path, body).unwrap();
            let err = table.extend_from_file(&path).unwrap_err().to_string();
            assert!(err.contains("prices.json") && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn failed_attempts_are_charged_and_estimates_flagged_and_old_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        // A ledger written before failed calls were counted still loads.
        std::fs::write(
            &path,
            r#"{"campaign_ms": 5, "agents": {"a": {"usage": {"input_tokens": 1,
                "output_tokens": 2, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}, "cost_nanodollars": 7, "llm_calls": 1,
                "tool_calls": 0, "active_ms": 0}}}"#,
        )
        .unwrap();
        let ledger = Ledger::open(&path, PriceTable::default(), Budgets::default()).unwrap();
        assert_eq!(ledger.agent_totals("a").failed_llm_calls, 0);
        let billed = BilledUsage {
            usage: Usage {
                input_tokens: 1_000,
                output_tokens: 30,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 2_000,
            },
            estimated_tokens: 29,
            attempts: 2,
        };
        let cost = ledger
            .record_llm_failure("a", "claude-sonnet-4-5", &billed)
            .unwrap();
        // 1000*3000 + 30*15000 + 2000*300 n$
        assert_eq!(cost, 3_000_000 + 450_000 + 600_000);
        let totals = ledger.agent_totals("a");
        assert_eq!(totals.cost_nanodollars, 7 + cost);
        assert_eq!(totals.usage.total(), 3 + 3_030);
        assert_eq!(
            (
                totals.llm_calls,
                totals.failed_llm_calls,
                totals.estimated_tokens
            ),
            (1, 2, 29)
        );
        let reopened = Ledger::open(&path, PriceTable::default(), Budgets::default()).unwrap();
        assert_eq!(reopened.agent_totals("a"), ledger.agent_totals("a"));
        assert_eq!(reopened.campaign_totals().estimated_tokens, 29);
        // The default table prices an unknown model at its fallback.
        assert!(ledger.record_llm_failure("a", "mystery", &billed).is_ok());
        let strict = Ledger::open(&path, PriceTable::strict(), Budgets::default()).unwrap();
        assert!(matches!(
            strict.record_llm_failure("a", "mystery", &billed),
            Err(LedgerError::NoPrice(_))
        ));
    }

    #[test]
    fn longest_prefix_wins() {
        let table = PriceTable::default();
        assert_eq!(table.price("claude-opus-4-6").map(|p| p.input), Some(5.0));
        assert_eq!(
            table.price("claude-opus-4-20250514").map(|p| p.input),
            Some(15.0)
        );
        assert_eq!(
            table.price("claude-sonnet-4-5").map(|p| p.output),
            Some(15.0)
        );
    }

    #[test]
    fn a_checkpoint_saves_the_running_time_so_far() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("ledger.json");
        let ledger = Ledger::open(&path, PriceTable::default(), Budgets::default())
            .unwrap_or_else(|e| panic!("{e}"));
        ledger.start_agent("a");
        std::thread::sleep(Duration::from_millis(120));
        ledger.checkpoint("a").unwrap_or_else(|e| panic!("{e}"));
        // As a killed process leaves it: nothing after the checkpoint is saved.
        let saved = Ledger::open(&path, PriceTable::default(), Budgets::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let ms = saved.agent_totals("a").active_ms;
        assert!((120..5_000).contains(&ms), "{ms} ms saved");
    }

    #[test]
    fn mirrored_totals_replace_the_agent_and_persist() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("ledger.json");
        let ledger = Ledger::open(&path, PriceTable::default(), Budgets::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let totals = Totals {
            tool_calls: 7,
            active_ms: 90_000,
            ..Totals::default()
        };
        ledger
            .set_agent_totals("job-agent", totals)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ledger.agent_totals("job-agent"), totals);
        let reopened = Ledger::open(&path, PriceTable::default(), Budgets::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reopened.agent_totals("job-agent").active_ms, 90_000);
        assert_eq!(reopened.campaign_totals().tool_calls, 7);
    }

    #[test]
    fn ledger_survives_reopen_and_budgets_stop() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("ledger.json");
        let budgets = Budgets {
            per_agent: Budget {
                dollars: Some(0.01),
                ..Budget::default()
            },
            campaign: Budget {
                tokens: Some(5_000),
                ..Budget::default()
            },
        };
        let usage = Usage {
            input_tokens: 1_000,
            output_tokens: 100,
            ..Usage::default()
        };
        {
            let ledger = Ledger::open(&path, PriceTable::default(), budgets)
                .unwrap_or_else(|e| panic!("{e}"));
            ledger.start_agent("a");
            // $0.0045 per call on sonnet.
            ledger
                .record_llm("a", "claude-sonnet-4-5", &usage)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(ledger.check("a").is_ok());
            ledger
                .record_llm("a", "claude-sonnet-4-5", &usage)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(ledger.check("a").is_ok());
        }
        let ledger =
            Ledger::open(&path, PriceTable::default(), budgets).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ledger.agent_totals("a").cost_nanodollars, 9_000_000);
        assert_eq!(ledger.agent_totals("a").usage.total(), 2_200);
        ledger
            .record_llm("a", "claude-sonnet-4-5", &usage)
            .unwrap_or_else(|e| panic!("{e}"));
        let e = ledger.check("a").err();
        assert_eq!(
            e.map(|e| (e.scope, e.resource)),
            Some((Scope::Agent, Resource::Dollars))
        );
        // Other agents share the campaign's tokens.
        ledger
            .record_llm(
                "b",
                "claude-haiku-4-5",
                &Usage {
                    input_tokens: 1_700,
                    ..Usage::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let e = ledger.check("b").err();
        assert_eq!(
            e.map(|e| (e.scope, e.resource)),
            Some((Scope::Campaign, Resource::Tokens))
        );
    }
}
