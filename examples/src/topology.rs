//! The social-network service graph, modelled on DeathStarBench's Social Network.
//!
//! ```text
//! frontend ─ compose ─> compose-post ─┬─> text, user-mention, url-shorten,   (in parallel)
//!          │                          │   unique-id, media, user
//!          │                          ├─> post-storage/store
//!          │                          └─> user-timeline/write, home-timeline/write ─> social-graph
//!          ├ home ────> home-timeline/read ─> post-storage/read
//!          └ user ────> user-timeline/read ─> post-storage/read
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::scenario::{LoadSpec, TopologyOverrides};

/// CPU per visit spent on request handling (HTTP, SeerLayer, JSON) on top of the burned work, ms.
///
/// Measured in a `mixed-10` `off` run at 150 requests/s (2026-12-04): the leaf services used
/// 0.45-0.46 ms of CPU per visit with 0.3 ms of work, post-storage 0.42.
pub const SERVER_MS_PER_VISIT: f64 = 0.155;

/// CPU a service spends per downstream call it makes (HTTP client, JSON), ms.
///
/// Same run: compose-post, with nine calls per visit, used 1.05 ms per visit against the
/// leaves' 0.455; home-timeline, with one, 0.52; the frontend, with one, 0.52.
pub const CLIENT_MS_PER_CALL: f64 = 0.067;

/// One downstream call.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Call {
    /// Callee service.
    pub service: String,
    /// Callee operation (the request path without `/`).
    pub op: String,
    /// How many times it is called (in parallel).
    pub count: u32,
}

impl Call {
    /// Parses `service/op` or `service/op*count`.
    ///
    /// # Errors
    /// On a malformed call.
    pub fn parse(s: &str) -> Result<Self> {
        let (target, count) = match s.split_once('*') {
            Some((t, c)) => (t, c.trim().parse::<u32>()?),
            None => (s, 1),
        };
        let Some((service, op)) = target.split_once('/') else {
            bail!("call `{s}` is not `service/op`");
        };
        Ok(Self {
            service: service.trim().into(),
            op: op.trim().into(),
            count,
        })
    }
}

/// One service of the app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Name, also its `SEER_SERVICE`.
    pub name: String,
    /// Thread CPU time burned per request, milliseconds.
    pub work_ms: f64,
    /// Worker permits: requests that may do CPU work at once.
    pub pool: usize,
    /// CPU quota, percent of one core.
    pub quota_pct: f64,
    /// Per operation: stages of calls; calls within a stage run in parallel.
    pub ops: BTreeMap<String, Vec<Vec<Call>>>,
}

/// The whole app: services and, once started, their addresses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Topology {
    /// The services, frontend first.
    pub services: Vec<ServiceSpec>,
    /// Service name -> listen address (filled in by the harness).
    pub addrs: BTreeMap<String, SocketAddr>,
    /// Service name -> admin (fault knob) address.
    pub admin_addrs: BTreeMap<String, SocketAddr>,
}

fn calls(stages: &[&[&str]]) -> Vec<Vec<Call>> {
    stages
        .iter()
        .map(|st| {
            st.iter()
                .filter_map(|c| Call::parse(c).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Topology {
    /// The default twelve-service graph.
    pub fn social_network() -> Self {
        let leaf = |name: &str| ServiceSpec {
            name: name.into(),
            work_ms: 0.3,
            pool: 1,
            quota_pct: 12.0,
            ops: BTreeMap::new(),
        };
        let mut frontend = leaf("frontend");
        frontend.quota_pct = 40.0;
        frontend.pool = 2;
        frontend
            .ops
            .insert("compose".into(), calls(&[&["compose-post/compose"]]));
        frontend
            .ops
            .insert("home".into(), calls(&[&["home-timeline/read"]]));
        frontend
            .ops
            .insert("user".into(), calls(&[&["user-timeline/read"]]));
        let mut compose = leaf("compose-post");
        compose.quota_pct = 25.0;
        compose.ops.insert(
            "compose".into(),
            calls(&[
                &[
                    "text/process",
                    "user-mention/lookup",
                    "url-shorten/shorten",
                    "unique-id/next",
                    "media/upload",
                    "user/lookup",
                ],
                &["post-storage/store"],
                &["user-timeline/write", "home-timeline/write"],
            ]),
        );
        let mut home = leaf("home-timeline");
        home.quota_pct = 20.0;
        home.ops
            .insert("write".into(), calls(&[&["social-graph/followers"]]));
        home.ops
            .insert("read".into(), calls(&[&["post-storage/read"]]));
        let mut user_tl = leaf("user-timeline");
        user_tl.quota_pct = 15.0;
        user_tl
            .ops
            .insert("read".into(), calls(&[&["post-storage/read"]]));
        let mut storage = leaf("post-storage");
        storage.quota_pct = 25.0;
        Self {
            services: vec![
                frontend,
                compose,
                leaf("text"),
                leaf("user-mention"),
                leaf("url-shorten"),
                leaf("unique-id"),
                leaf("media"),
                leaf("user"),
                storage,
                user_tl,
                home,
                leaf("social-graph"),
            ],
            addrs: BTreeMap::new(),
            admin_addrs: BTreeMap::new(),
        }
    }

    /// Applies a scenario's overrides.
    ///
    /// # Errors
    /// On an override naming an unknown service or a malformed call.
    pub fn with_overrides(mut self, o: &TopologyOverrides) -> Result<Self> {
        for s in &mut self.services {
            if let Some(w) = o.default_work_ms {
                s.work_ms = w;
            }
            if let Some(q) = o.default_quota_pct {
                s.quota_pct = q;
            }
            if let Some(p) = o.default_pool {
                s.pool = p;
            }
        }
        for (name, ov) in &o.services {
            let Some(s) = self.services.iter_mut().find(|s| &s.name == name) else {
                bail!("topology override for unknown service `{name}`");
            };
            if let Some(w) = ov.work_ms {
                s.work_ms = w;
            }
            if let Some(q) = ov.quota_pct {
                s.quota_pct = q;
            }
            if let Some(p) = ov.pool {
                s.pool = p.max(1);
            }
            for (op, stages) in &ov.calls {
                let mut parsed = Vec::new();
                for st in stages {
                    parsed.push(
                        st.iter()
                            .map(|c| Call::parse(c))
                            .collect::<Result<Vec<_>>>()?,
                    );
                }
                s.ops.insert(op.clone(), parsed);
            }
        }
        let names: Vec<String> = self.names();
        for s in &self.services {
            for stages in s.ops.values() {
                for c in stages.iter().flatten() {
                    if !names.contains(&c.service) {
                        bail!("{} calls unknown service `{}`", s.name, c.service);
                    }
                }
            }
        }
        Ok(self)
    }

    /// Service names, frontend first.
    pub fn names(&self) -> Vec<String> {
        self.services.iter().map(|s| s.name.clone()).collect()
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Visits per second of each (service) at the load's base rate and mix.
    pub fn visit_rates(&self, load: &LoadSpec, rps: f64) -> BTreeMap<String, f64> {
        self.rates(load, rps).0
    }

    /// Visits per second and downstream calls made per second, of each service.
    fn rates(&self, load: &LoadSpec, rps: f64) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
        let zero =
            || -> BTreeMap<String, f64> { self.names().into_iter().map(|n| (n, 0.0)).collect() };
        let (mut visits, mut calls) = (zero(), zero());
        let total: f64 = load.mix.iter().map(|m| m.weight).sum::<f64>().max(1e-9);
        for m in &load.mix {
            self.visit(
                "frontend",
                &m.op,
                rps * m.weight / total,
                &mut visits,
                &mut calls,
                0,
            );
        }
        (visits, calls)
    }

    fn visit(
        &self,
        svc: &str,
        op: &str,
        rate: f64,
        visits: &mut BTreeMap<String, f64>,
        calls: &mut BTreeMap<String, f64>,
        depth: u32,
    ) {
        if depth > 16 {
            return;
        }
        *visits.entry(svc.to_string()).or_default() += rate;
        if let Some(s) = self.service(svc)
            && let Some(stages) = s.ops.get(op)
        {
            for c in stages.iter().flatten() {
                let out = rate * f64::from(c.count);
                *calls.entry(svc.to_string()).or_default() += out;
                self.visit(&c.service, &c.op, out, visits, calls, depth + 1);
            }
        }
    }

    /// The service closest to saturation at `rps` (CPU demand over quota): the ground-truth
    /// culprit of a load spike.
    ///
    /// Demand per second is each visit's burned work plus [`SERVER_MS_PER_VISIT`] of request
    /// handling, plus [`CLIENT_MS_PER_CALL`] for each downstream call the service makes. Without
    /// the client cost a service that calls others looks cheaper than it is: at the default graph
    /// and mix, home-timeline (one call per visit) is the most loaded service against its quota,
    /// measured, and not user-timeline, which a work-only estimate names.
    pub fn bottleneck(&self, load: &LoadSpec, rps: f64) -> String {
        self.utilisation(load, rps)
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or_else(|| "frontend".into(), |(n, _)| n)
    }

    /// Estimated CPU demand over quota of each service at `rps` (see [`Topology::bottleneck`]).
    pub fn utilisation(&self, load: &LoadSpec, rps: f64) -> Vec<(String, f64)> {
        let (visits, calls) = self.rates(load, rps);
        self.services
            .iter()
            .map(|s| {
                let v = visits.get(&s.name).copied().unwrap_or(0.0);
                let c = calls.get(&s.name).copied().unwrap_or(0.0);
                let ms_per_s = v * (s.work_ms + SERVER_MS_PER_VISIT) + c * CLIENT_MS_PER_CALL;
                let util = ms_per_s / 1000.0 / (s.quota_pct / 100.0).max(1e-6);
                (s.name.clone(), util)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bottleneck_counts_the_cost_of_downstream_calls() {
        let t = Topology::social_network()
            .with_overrides(&TopologyOverrides::default())
            .unwrap();
        let load = LoadSpec::default();
        // Measured at 150 requests/s (mixed-10, off): home-timeline 0.34 of its quota,
        // compose-post 0.33, user-timeline 0.32, post-storage 0.26.
        assert_eq!(t.bottleneck(&load, 150.0), "home-timeline");
        let util: BTreeMap<String, f64> = t.utilisation(&load, 150.0).into_iter().collect();
        for (svc, measured) in [
            ("home-timeline", 0.34),
            ("compose-post", 0.33),
            ("user-timeline", 0.32),
            ("text", 0.30),
            ("frontend", 0.20),
        ] {
            assert!(
                (util[svc] - measured).abs() < 0.03,
                "{svc}: estimated {:.3}, measured {measured}",
                util[svc]
            );
        }
        // A caller with no work of its own still costs its calls: with every call's cost
        // counted, the fan-out service overtakes the rest once its quota is cut.
        let mut t2 = t.clone();
        for s in &mut t2.services {
            if s.name == "compose-post" {
                s.quota_pct = 15.0;
                s.work_ms = 0.0;
            }
        }
        assert_eq!(t2.bottleneck(&load, 150.0), "compose-post");
    }

    #[test]
    fn default_graph_has_twelve_services_and_valid_calls() {
        let t = Topology::social_network()
            .with_overrides(&TopologyOverrides::default())
            .unwrap();
        assert_eq!(t.services.len(), 12);
        let v = t.visit_rates(&LoadSpec::default(), 100.0);
        assert!((v["frontend"] - 100.0).abs() < 1e-9);
        assert!((v["post-storage"] - 100.0).abs() < 1e-9);
        assert!((v["text"] - 50.0).abs() < 1e-9);
    }

    #[test]
    fn call_parse() {
        assert_eq!(
            Call::parse("text/process*3").unwrap(),
            Call {
                service: "text".into(),
                op: "process".into(),
                count: 3
            }
        );
        assert!(Call::parse("nope").is_err());
    }
}
