//! Integration tests against the local stack (moto) through the real AWS SDK, as one test
//! binary: each module a concern.

mod alarms;
mod api;
mod artifacts;
mod callbacks;
mod coding;
mod definitions;
mod delivery;
mod dlq;
mod events;
mod guide;
mod iam;
mod intake;
mod integrations;
mod limits;
mod lockdown;
mod operators;
mod outputs;
mod paging;
mod pipeline;
mod recovery;
mod resilience;
mod schedules;
mod watchers;
mod webhooks;
