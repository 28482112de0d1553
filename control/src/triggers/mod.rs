//! Triggers: MistServer-compatible webhooks.
//!
//! Handlers come from the store ([`Triggers::set_handlers`] after every
//! change). A gating trigger asks every matching blocking handler, in
//! order, and all must allow; a failing or slow handler counts as its
//! default answer. Non-blocking deliveries go to a bounded queue served by a
//! background worker that retries with backoff, so firing never waits on the
//! network and never stalls media.

pub mod catalogue;
mod deliver;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

pub use catalogue::{truthy, Effect, Trigger};
pub use deliver::{signature, SIGNATURE_HEADER};

use crate::metrics::Metrics;
use crate::model::TriggerHandler;

/// The stream a trigger concerns: what filters and tenant scoping look at.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Owning tenant, if the stream is configured.
    pub tenant: Option<&'a str>,
    /// The stream's tags.
    pub tags: &'a [String],
}

impl<'a> Scope<'a> {
    /// The scope of a configured stream.
    pub fn of(stream: &'a crate::model::StreamConfig) -> Scope<'a> {
        Scope { stream: &stream.name, tenant: Some(&stream.tenant), tags: &stream.tags }
    }
}

/// Whether a handler's stream filter admits `scope` (MistServer's rules:
/// exact or base name before `+`/space, `#tag`, `!` to exclude; an empty
/// filter, or one of exclusions only, admits everything else).
pub fn filter_matches(filter: &[String], scope: &Scope<'_>) -> bool {
    let base = scope.stream.split(['+', ' ']).next().unwrap_or(scope.stream);
    let hit = |pat: &str| match pat.strip_prefix('#') {
        Some(tag) => scope.tags.iter().any(|t| t == tag),
        None => pat == scope.stream || pat == base,
    };
    let mut positives = false;
    let mut matched = false;
    for f in filter {
        if let Some(neg) = f.strip_prefix('!') {
            if hit(neg) {
                return false;
            }
        } else {
            positives = true;
            matched |= hit(f);
        }
    }
    matched || !positives
}

struct Job {
    handler: TriggerHandler,
    trigger: Trigger,
    fields: Arc<Vec<String>>,
}

/// Attempts for a queued (non-blocking) delivery, and the first backoff.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const QUEUE: usize = 4096;

/// The trigger hub.
pub struct Triggers {
    handlers: RwLock<Arc<Vec<TriggerHandler>>>,
    client: reqwest::Client,
    queue: mpsc::Sender<Job>,
    instance: String,
    metrics: Arc<Metrics>,
}

impl Triggers {
    /// A hub and its delivery worker (spawn the future; it ends when the hub is dropped).
    pub fn new(instance: String, metrics: Arc<Metrics>) -> (Arc<Triggers>, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default();
        let hub = Arc::new(Triggers {
            handlers: RwLock::new(Arc::new(Vec::new())),
            client: client.clone(),
            queue: tx,
            instance: instance.clone(),
            metrics: metrics.clone(),
        });
        (hub, worker(rx, client, instance, metrics))
    }

    /// Replaces the handler set (after the store changed).
    pub fn set_handlers(&self, handlers: Vec<TriggerHandler>) {
        *self.handlers.write() = Arc::new(handlers);
    }

    fn matching(&self, trigger: Trigger, scope: Option<&Scope<'_>>) -> Vec<TriggerHandler> {
        let all = self.handlers.read().clone();
        all.iter()
            .filter(|h| h.trigger == trigger.name())
            .filter(|h| match (&h.tenant, scope) {
                (None, _) => true,
                // A tenant's handler sees only that tenant's streams.
                (Some(t), Some(s)) => s.tenant == Some(t.as_str()),
                (Some(_), None) => false,
            })
            .filter(|h| scope.is_none_or(|s| !trigger.stream_specific() || filter_matches(&h.streams, s)))
            .cloned()
            .collect()
    }

    /// Whether any handler would see this trigger.
    pub fn has(&self, trigger: Trigger, scope: Option<&Scope<'_>>) -> bool {
        !self.matching(trigger, scope).is_empty()
    }

    /// A gating trigger: true when every matching handler allows.
    pub async fn allow(&self, trigger: Trigger, scope: Option<&Scope<'_>>, fields: Vec<String>) -> bool {
        let fields = Arc::new(fields);
        let mut allowed = true;
        for h in self.matching(trigger, scope) {
            let answer = self.ask(h, trigger, &fields).await;
            allowed &= truthy(&answer);
        }
        allowed
    }

    /// A rewriting trigger: each matching handler's answer replaces `value`
    /// (the last `fields` entry named like the value is not changed for the
    /// next handler: they all see the original request). `None`: refused
    /// (an empty answer). With no handler, `value` comes back unchanged.
    pub async fn rewrite(
        &self,
        trigger: Trigger,
        scope: Option<&Scope<'_>>,
        fields: Vec<String>,
        value: String,
    ) -> Option<String> {
        let fields = Arc::new(fields);
        let mut value = value;
        for h in self.matching(trigger, scope) {
            let answer = self.ask(h, trigger, &fields).await;
            let answer = answer.trim();
            if answer.is_empty() {
                return None;
            }
            value = answer.to_owned();
        }
        Some(value)
    }

    /// A notification: queued for every matching handler; never waits.
    pub fn notify(&self, trigger: Trigger, scope: Option<&Scope<'_>>, fields: Vec<String>) {
        let fields = Arc::new(fields);
        for h in self.matching(trigger, scope) {
            self.enqueue(Job { handler: h, trigger, fields: fields.clone() });
        }
    }

    fn enqueue(&self, job: Job) {
        if self.queue.try_send(job).is_err() {
            self.metrics.trigger_dropped.inc();
            warn!("trigger queue full; a notification was dropped");
        }
    }

    /// A blocking handler's answer, or its default (queued if not blocking).
    async fn ask(&self, h: TriggerHandler, trigger: Trigger, fields: &Arc<Vec<String>>) -> String {
        if !h.blocking {
            let default = h.default_response.clone();
            self.enqueue(Job { handler: h, trigger, fields: fields.clone() });
            return default;
        }
        let started = std::time::Instant::now();
        let result = deliver::post(&self.client, &h, trigger, fields, &self.instance).await;
        self.metrics.observe_trigger(trigger.name(), started.elapsed(), result.is_ok());
        match result {
            Ok(answer) => {
                debug!(trigger = trigger.name(), url = %h.url, answer, "trigger answered");
                answer
            }
            Err(e) => {
                warn!(trigger = trigger.name(), url = %h.url, error = %e, default = %h.default_response, "blocking trigger failed; using its default answer");
                h.default_response
            }
        }
    }
}

async fn worker(mut rx: mpsc::Receiver<Job>, client: reqwest::Client, instance: String, metrics: Arc<Metrics>) {
    let limit = Arc::new(Semaphore::new(64));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let (client, instance, metrics) = (client.clone(), instance.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                let started = std::time::Instant::now();
                let r = deliver::post(&client, &job.handler, job.trigger, &job.fields, &instance).await;
                metrics.observe_trigger(job.trigger.name(), started.elapsed(), r.is_ok());
                match r {
                    Ok(_) => return,
                    Err(e) if attempt == ATTEMPTS => {
                        warn!(trigger = job.trigger.name(), url = %job.handler.url, error = %e, attempts = ATTEMPTS, "trigger notification gave up");
                    }
                    Err(e) => {
                        debug!(trigger = job.trigger.name(), url = %job.handler.url, error = %e, attempt, "trigger notification failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(stream: &'a str, tags: &'a [String]) -> Scope<'a> {
        Scope { stream, tenant: None, tags }
    }

    #[test]
    fn filters_follow_mistserver() {
        let tags = vec!["sports".to_string()];
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(filter_matches(&[], &scope("a", &[])));
        assert!(filter_matches(&f(&["a"]), &scope("a", &[])));
        assert!(filter_matches(&f(&["a"]), &scope("a+backup", &[])));
        assert!(!filter_matches(&f(&["a"]), &scope("b", &[])));
        assert!(!filter_matches(&f(&["!a"]), &scope("a", &[])));
        assert!(filter_matches(&f(&["!a"]), &scope("b", &[])));
        assert!(filter_matches(&f(&["#sports"]), &scope("b", &tags)));
        assert!(!filter_matches(&f(&["#news"]), &scope("b", &tags)));
        assert!(!filter_matches(&f(&["#sports", "!b"]), &scope("b", &tags)));
    }
}
