//! Probes over what agents did rather than what they entered: run over every
//! agent's evaluation log (at the end of a campaign, and by the verifier for an
//! entry's author), so an agent that probes the oracle is flagged even if it never
//! enters anything.

use aar_store::{NewFlag, Store, now_millis};

use crate::error::Result;
use crate::probes;

/// Flags every agent whose evaluation log on any of `tasks` looks like oracle
/// probing and has no such flag yet; returns how many flags were recorded.
pub async fn flag_oracle_probing(store: &Store, tasks: &[String]) -> Result<usize> {
    let mut recorded = 0;
    for agent in store.agents().await? {
        for task in tasks {
            let log = store.evaluation_predictions(&agent.id, task).await?;
            let submissions: Vec<Vec<u8>> = log.into_iter().map(|e| e.predictions).collect();
            let Some(flag) = probes::oracle_probing(&submissions) else {
                continue;
            };
            let mut tx = store.begin_write().await?;
            if tx.agent_flagged(&agent.id, &flag.probe).await? {
                continue;
            }
            let mut evidence = flag.evidence.clone();
            evidence["task"] = serde_json::json!(task);
            let new = NewFlag {
                entry_id: None,
                agent_id: agent.id.clone(),
                probe: flag.probe.clone(),
                summary: format!("{} (task {task})", flag.summary),
                evidence: evidence.to_string(),
            };
            tx.insert_flag(&new, now_millis()).await?;
            tx.append_audit(
                "verifier",
                "flag_agent",
                &serde_json::json!({ "agent_id": agent.id, "probe": flag.probe, "task": task })
                    .to_string(),
            );
            tx.commit().await?;
            recorded += 1;
        }
    }
    Ok(recorded)
}
