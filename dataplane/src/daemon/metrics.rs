//! The Prometheus endpoint, `daemon --metrics-addr ADDR:PORT` (off by default): what the
//! programs counted per path and per drop reason, what the conntrack tables hold and
//! evicted, the daemon's networks, containers, endpoints and published ports, the
//! embedded resolvers' answers, and how long each kind of control request took. Figures
//! are read from the maps and the state on each scrape, under the daemon's lock, so a
//! scrape sees one moment; only the request latencies are kept between scrapes.
//!
//! Exposition is `prometheus-client`'s (the Prometheus project's own Rust client), in
//! OpenMetrics text, which Prometheus asks for first.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex as SyncMutex},
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    Router,
    extract::State as Extract,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{
        counter::ConstCounter,
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use super::{Core, DatapathFigures, EndpointFigures, Shared};
use crate::{dns, state::Status};

/// The request kind label of the latency histogram, e.g. `[("request", "run")]`.
type RequestLabels = [(&'static str, String); 1];
type Latencies = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The request latencies kept between scrapes; the control socket records into them.
#[derive(Clone)]
pub(super) struct RequestTimes(Latencies);

impl RequestTimes {
    fn new() -> Self {
        // 100 µs to about 3 s, doubling: a `stats` takes a fraction of a millisecond, a
        // `run` a few milliseconds, a `stop` up to its timeout.
        fn histogram() -> Histogram {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        }
        Self(Family::new_with_constructor(histogram))
    }

    pub(super) fn record(&self, kind: String, took: Duration) {
        self.0.get_or_create(&[("request", kind)]).observe(took.as_secs_f64());
    }
}

/// Serves the metrics on `address` for as long as the daemon runs, and hands back the
/// request latencies for the control socket to record into.
pub(super) async fn serve(core: Shared, address: SocketAddr) -> Result<RequestTimes> {
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| {
        format!("--metrics-addr {address}: cannot listen there; free the port or pick another")
    })?;
    let times = RequestTimes::new();
    let moment = Arc::new(SyncMutex::new(Moment::default()));
    let mut registry = Registry::with_prefix("dataplane");
    registry.register_with_unit(
        "control_request_duration",
        "Time the daemon took to answer a control request, by request",
        Unit::Seconds,
        times.0.clone(),
    );
    registry.register_collector(Box::new(MomentCollector(moment.clone())));
    let endpoint = Arc::new(Endpoint { core, scrapes: tokio::sync::Mutex::new(()), moment, registry });
    let router = Router::new().route("/metrics", get(scrape)).with_state(endpoint);
    log::info!("serving Prometheus metrics on http://{address}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            log::warn!("metrics endpoint: {e:#}");
        }
    });
    Ok(times)
}

struct Endpoint {
    core: Shared,
    /// One scrape at a time, so that each encodes the moment it took.
    scrapes: tokio::sync::Mutex<()>,
    /// What the collector encodes: filled by each scrape before it encodes.
    moment: Arc<SyncMutex<Moment>>,
    registry: Registry,
}

async fn scrape(Extract(endpoint): Extract<Arc<Endpoint>>) -> Response {
    let _one_at_a_time = endpoint.scrapes.lock().await;
    let taken = {
        let mut core = endpoint.core.lock().await;
        Moment::take(&mut core)
    };
    let moment = match taken {
        Ok(moment) => moment,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the datapath: {e:#}\n"))
                .into_response();
        }
    };
    // Not held while encoding: the collector takes it.
    *endpoint.moment.lock().unwrap_or_else(|e| e.into_inner()) = moment;
    let mut body = String::new();
    match encode(&mut body, &endpoint.registry) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}\n")).into_response(),
    }
}

/// Everything a scrape shows but the request latencies, read at one moment.
#[derive(Debug, Default)]
struct Moment {
    datapath: Option<DatapathFigures>,
    conntrack_limit: u64,
    networks: u64,
    /// Containers by state (`created`, `running`, `exited`, `dead`).
    containers: Vec<(&'static str, u64)>,
    /// Endpoints by owner kind (`dataplane`, `cni`, `docker`).
    endpoints: Vec<(&'static str, u64)>,
    published_ports: u64,
    dns: dns::Answers,
    /// What each endpoint sent and received.
    traffic: Vec<EndpointFigures>,
}

impl Moment {
    fn take(core: &mut Core) -> Result<Self> {
        let datapath = core.datapath_figures()?;
        let count = |kinds: &[&'static str], of: &mut dyn Iterator<Item = &'static str>| {
            let mut counts: Vec<(&'static str, u64)> = kinds.iter().map(|kind| (*kind, 0)).collect();
            for kind in of {
                if let Some(slot) = counts.iter_mut().find(|(k, _)| *k == kind) {
                    slot.1 += 1;
                }
            }
            counts
        };
        let containers = count(
            &["created", "running", "exited", "dead"],
            &mut core.state.containers.iter().map(|container| match container.status {
                Status::Created => "created",
                Status::Running { .. } => "running",
                Status::Exited { .. } => "exited",
                Status::Dead { .. } => "dead",
            }),
        );
        let endpoints = count(
            &["dataplane", "cni", "docker"],
            &mut core.state.endpoints.iter().map(|endpoint| match endpoint.owner {
                crate::state::Owner::Container { .. } => "dataplane",
                crate::state::Owner::Cni { .. } => "cni",
                crate::state::Owner::Docker { .. } => "docker",
            }),
        );
        Ok(Self {
            datapath: Some(datapath),
            conntrack_limit: u64::from(
                core.config.conntrack_max.unwrap_or(dataplane_common::CONNTRACK_DEFAULT_SIZE),
            ),
            networks: core.state.networks.len() as u64,
            containers,
            endpoints,
            published_ports: core.state.endpoints.iter().map(|endpoint| endpoint.ports.len() as u64).sum(),
            dns: core.resolvers.answers(),
            traffic: core.endpoint_figures(None, None)?,
        })
    }
}

#[derive(Debug)]
struct MomentCollector(Arc<SyncMutex<Moment>>);

/// One metric family: its descriptor, then one sample per label set.
fn family<M: EncodeMetric, L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else { return Ok(()) };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, sample) in samples {
        sample.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric family without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    sample: M,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, sample.metric_type())?;
    sample.encode(metric)
}

impl Collector for MomentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let moment = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = &mut encoder;
        if let Some(figures) = &moment.datapath {
            let paths = || figures.paths.iter().map(|(path, counter)| ([("path", path.name())], counter));
            family(
                e,
                "datapath_packets",
                "Packets the eBPF programs handled, by the path they took",
                paths().map(|(labels, counter)| (labels, ConstCounter::new(counter.packets))),
            )?;
            family(
                e,
                "datapath_bytes",
                "Bytes the eBPF programs handled, by the path they took",
                paths().map(|(labels, counter)| (labels, ConstCounter::new(counter.bytes))),
            )?;
            family(
                e,
                "datapath_drops",
                "Packets the eBPF programs dropped, by reason (the dropped_* paths)",
                figures.paths.iter().filter_map(|(path, counter)| {
                    let reason = path.name().strip_prefix("dropped_")?;
                    Some(([("reason", reason)], ConstCounter::new(counter.packets)))
                }),
            )?;
            let by_table = |tables: &crate::nat::PerTable| {
                tables.by_table().map(|(kind, confirmed, value)| {
                    ([("table", kind), ("state", if confirmed { "confirmed" } else { "unconfirmed" })], value)
                })
            };
            family(
                e,
                "conntrack_entries",
                "Flows each conntrack table holds",
                by_table(&figures.entries).map(|(labels, value)| (labels, ConstGauge::new(value as i64))),
            )?;
            family(
                e,
                "conntrack_evictions",
                "Flows evicted from a full conntrack table since the daemon started",
                by_table(&figures.evictions).map(|(labels, value)| (labels, ConstCounter::new(value))),
            )?;
        }
        single(
            e,
            "conntrack_limit",
            "Entries each conntrack table can hold (--conntrack-max)",
            ConstGauge::new(moment.conntrack_limit as i64),
        )?;
        single(e, "networks", "Networks the daemon has", ConstGauge::new(moment.networks as i64))?;
        family(
            e,
            "containers",
            "The daemon's own containers, by state",
            moment.containers.iter().map(|(state, n)| ([("state", *state)], ConstGauge::new(*n as i64))),
        )?;
        family(
            e,
            "endpoints",
            "Network attachments, by owner: dataplane's containers, the CNI plugin's, Docker's",
            moment.endpoints.iter().map(|(owner, n)| ([("owner", *owner)], ConstGauge::new(*n as i64))),
        )?;
        single(
            e,
            "published_ports",
            "Host ports published to containers",
            ConstGauge::new(moment.published_ports as i64),
        )?;
        family(
            e,
            "dns_answers",
            "Answers of the embedded resolvers, by source and response code",
            moment.dns.answered.iter().map(|(source, code, n)| {
                ([("source", source.name()), ("rcode", *code)], ConstCounter::new(*n))
            }),
        )?;
        let directions = |f: &EndpointFigures| [("sent", f.sent.clone()), ("received", f.received.clone())];
        let by_container = || {
            moment.traffic.iter().flat_map(move |f| {
                directions(f).map(|(direction, traffic)| {
                    (
                        [
                            ("network", f.network.clone()),
                            ("container", f.container.clone()),
                            ("direction", direction.to_string()),
                        ],
                        traffic,
                    )
                })
            })
        };
        family(
            e,
            "container_packets",
            "Packets each container sent and the eBPF programs delivered to it, by network",
            by_container().map(|(labels, t)| (labels, ConstCounter::new(t.packets))),
        )?;
        family(
            e,
            "container_bytes",
            "Bytes each container sent and the eBPF programs delivered to it, by network",
            by_container().map(|(labels, t)| (labels, ConstCounter::new(t.bytes))),
        )?;
        let mut by_network: std::collections::BTreeMap<(String, &str), (u64, u64)> = Default::default();
        for f in &moment.traffic {
            for (direction, traffic) in directions(f) {
                let sum = by_network.entry((f.network.clone(), direction)).or_default();
                *sum = (sum.0 + traffic.packets, sum.1 + traffic.bytes);
            }
        }
        let by_network = || {
            by_network.iter().map(|((network, direction), sums)| {
                ([("network", network.clone()), ("direction", direction.to_string())], *sums)
            })
        };
        family(
            e,
            "network_packets",
            "Packets a network's present containers sent and the eBPF programs delivered to them",
            by_network().map(|(labels, (packets, _))| (labels, ConstCounter::new(packets))),
        )?;
        family(
            e,
            "network_bytes",
            "Bytes a network's present containers sent and the eBPF programs delivered to them",
            by_network().map(|(labels, (_, bytes))| (labels, ConstCounter::new(bytes))),
        )?;
        single(
            e,
            "dns_unanswered",
            "Messages the embedded resolvers did not answer: no query, or no resolver on that network",
            ConstCounter::new(moment.dns.unanswered),
        )
    }
}

#[cfg(test)]
mod tests {
    use dataplane_common::{Counter, Path};

    use super::*;
    use crate::nat::PerTable;

    fn exposition(moment: Moment, times: &RequestTimes) -> String {
        let mut registry = Registry::with_prefix("dataplane");
        registry.register_with_unit("control_request_duration", "t", Unit::Seconds, times.0.clone());
        registry.register_collector(Box::new(MomentCollector(Arc::new(SyncMutex::new(moment)))));
        let mut body = String::new();
        encode(&mut body, &registry).unwrap();
        body
    }

    /// A moment with a figure in every family.
    fn full_moment() -> Moment {
        Moment {
            datapath: Some(DatapathFigures {
                paths: vec![
                    (Path::Forwarded, Counter { packets: 3, bytes: 300 }),
                    (Path::DroppedIcc, Counter { packets: 2, bytes: 120 }),
                ],
                entries: PerTable { masquerade: 5, published_unconfirmed: 1, ..Default::default() },
                evictions: PerTable { published: 7, ..Default::default() },
            }),
            conntrack_limit: 4096,
            networks: 2,
            containers: vec![("running", 1), ("exited", 0)],
            endpoints: vec![("cni", 4)],
            published_ports: 6,
            dns: dns::Answers { answered: vec![(dns::AnswerSource::Upstream, "NXDOMAIN", 9)], unanswered: 1 },
            traffic: vec![super::super::EndpointFigures {
                container: "web".into(),
                network: "red".into(),
                sent: super::super::Traffic { packets: 4, bytes: 400 },
                received: super::super::Traffic { packets: 2, bytes: 200 },
            }],
        }
    }

    #[test]
    fn each_figure_is_one_sample_named_by_its_labels() {
        let moment = full_moment();
        let times = RequestTimes::new();
        times.record("run".into(), Duration::from_millis(3));
        let text = exposition(moment, &times);
        for sample in [
            "dataplane_datapath_packets_total{path=\"forwarded\"} 3",
            "dataplane_datapath_bytes_total{path=\"dropped_icc\"} 120",
            "dataplane_datapath_drops_total{reason=\"icc\"} 2",
            "dataplane_conntrack_entries{table=\"masquerade\",state=\"confirmed\"} 5",
            "dataplane_conntrack_entries{table=\"published\",state=\"unconfirmed\"} 1",
            "dataplane_conntrack_evictions_total{table=\"published\",state=\"confirmed\"} 7",
            "dataplane_conntrack_limit 4096",
            "dataplane_networks 2",
            "dataplane_containers{state=\"running\"} 1",
            "dataplane_containers{state=\"exited\"} 0",
            "dataplane_endpoints{owner=\"cni\"} 4",
            "dataplane_published_ports 6",
            "dataplane_dns_answers_total{source=\"upstream\",rcode=\"NXDOMAIN\"} 9",
            "dataplane_dns_unanswered_total 1",
            "dataplane_control_request_duration_seconds_count{request=\"run\"} 1",
            "dataplane_control_request_duration_seconds_bucket{le=\"0.0032\",request=\"run\"} 1",
        ] {
            assert!(text.lines().any(|line| line == sample), "no `{sample}` in:\n{text}");
        }
        // Drops come only from the dropped_* paths.
        assert!(!text.contains("reason=\"forwarded\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// The example dashboard (docs/grafana/dataplane.json) asks only for metrics the
    /// endpoint serves: renaming one here breaks this test, not the users' dashboards.
    #[test]
    fn the_example_dashboard_queries_metrics_that_exist() {
        let times = RequestTimes::new();
        times.record("run".into(), Duration::from_millis(3));
        let text = exposition(full_moment(), &times);
        let served: std::collections::HashSet<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();
        let dashboard = include_str!("../../../docs/grafana/dataplane.json");
        let queried: Vec<&str> = dashboard
            .match_indices("dataplane_")
            .map(|(at, _)| {
                let rest = &dashboard[at..];
                &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
            })
            .collect();
        assert!(queried.len() >= 10, "{queried:?}");
        for metric in queried {
            assert!(served.contains(metric), "the dashboard queries {metric}, which is not served:\n{text}");
        }
    }
}
