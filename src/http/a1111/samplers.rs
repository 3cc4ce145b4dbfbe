//! A1111's sampler and schedule names: the lists `/sdapi/v1/samplers` and `/schedulers` return,
//! and `get_sampler_and_scheduler`'s resolution of a requested name:
//!
//! 1. a trailing `" " + <schedule label or alias>` is split off as the schedule ("DPM++ 2M
//!    Karras", "Euler a Exponential");
//! 2. the rest is looked up exactly (case-sensitive) among the sampler names, then, as an
//!    extension clients rely on, among the A1111 aliases (`k_euler_a`);
//! 3. anything else becomes "DPM++ 2M" (A1111's `samplers[0]`), logged;
//! 4. the schedule is the explicit `scheduler` (name or label, exact) when it is known, else the
//!    split-off one, else "Automatic"; "Automatic" means the sampler's own default schedule
//!    (DPM++ 2M → Karras) or, without one, the model's.
//!
//! Only the samplers and schedules the engine implements are listed; A1111 names the engine does
//! not implement are unknown names here.

use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::request::{SamplerKind, ScheduleKind};

/// `/sdapi/v1/samplers` item. A1111 types `options` as `dict[str, str]`, so flags are `"True"`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SamplerItem {
    #[schema(example = "DPM++ 2M")]
    pub name: String,
    pub aliases: Vec<String>,
    #[schema(value_type = Object)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// `/sdapi/v1/schedulers` item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SchedulerItem {
    #[schema(example = "karras")]
    pub name: String,
    #[schema(example = "Karras")]
    pub label: String,
    pub aliases: Option<Vec<String>>,
    pub default_rho: f64,
    pub need_inner_model: bool,
}

/// A1111's fallback for unknown names (its `samplers[0]`).
pub const FALLBACK_SAMPLER: SamplerKind = SamplerKind::DpmPp2m;

/// A1111's option flags per sampler (`KDiffusionSampler` configs), as `(key, value)` strings.
fn sampler_options(kind: SamplerKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        SamplerKind::DpmPp2m => &[("scheduler", "karras")],
        SamplerKind::DpmPp2mSde => &[("scheduler", "exponential"), ("brownian_noise", "True")],
        SamplerKind::EulerAncestral => &[("uses_ensd", "True")],
        SamplerKind::Heun => &[("second_order", "True")],
        _ => &[],
    }
}

/// The schedule "Automatic" stands for with this sampler (its `options.scheduler`).
pub fn sampler_default_schedule(kind: SamplerKind) -> Option<ScheduleKind> {
    sampler_options(kind)
        .iter()
        .find(|(key, _)| *key == "scheduler")
        .and_then(|(_, name)| ScheduleKind::from_name(name))
}

/// The `/sdapi/v1/samplers` list, in A1111's order.
pub fn sampler_items() -> Vec<SamplerItem> {
    SamplerKind::ALL
        .iter()
        .map(|(kind, name, aliases)| SamplerItem {
            name: name.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            options: sampler_options(*kind).iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect(),
        })
        .collect()
}

/// A1111's `default_rho` (-1 = unused) and `need_inner_model` for a schedule.
fn schedule_facts(kind: ScheduleKind) -> (f64, bool) {
    match kind {
        ScheduleKind::Karras => (7.0, false),
        ScheduleKind::SgmUniform => (-1.0, true),
        _ => (-1.0, false),
    }
}

/// A1111's aliases for a schedule (only SGM Uniform has one).
fn schedule_aliases(kind: ScheduleKind) -> Option<&'static [&'static str]> {
    match kind {
        ScheduleKind::SgmUniform => Some(&["SGMUniform"]),
        _ => None,
    }
}

/// The `/sdapi/v1/schedulers` list.
pub fn scheduler_items() -> Vec<SchedulerItem> {
    ScheduleKind::ALL
        .iter()
        .map(|(kind, name, label)| {
            let (default_rho, need_inner_model) = schedule_facts(*kind);
            SchedulerItem {
                name: name.to_string(),
                label: label.to_string(),
                aliases: schedule_aliases(*kind).map(|a| a.iter().map(|s| s.to_string()).collect()),
                default_rho,
                need_inner_model,
            }
        })
        .collect()
}

/// A schedule by exact A1111 name or label (`schedulers_map`), or alias.
fn schedule_exact(text: &str) -> Option<ScheduleKind> {
    ScheduleKind::ALL.iter().find_map(|(kind, name, label)| {
        let alias = schedule_aliases(*kind).is_some_and(|a| a.contains(&text));
        (*name == text || *label == text || alias).then_some(*kind)
    })
}

fn sampler_exact(text: &str) -> Option<SamplerKind> {
    let by_name = SamplerKind::ALL.iter().find(|(_, name, _)| *name == text);
    let by_alias = || SamplerKind::ALL.iter().find(|(_, _, aliases)| aliases.contains(&text));
    by_name.or_else(by_alias).map(|(kind, _, _)| *kind)
}

/// A resolved sampler and schedule, with what to write in the infotext and `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedSampler {
    pub sampler: SamplerKind,
    /// What the engine runs: "Automatic" already replaced by the sampler's default.
    pub schedule: ScheduleKind,
    /// True when the requested name was unknown and "DPM++ 2M" was used instead.
    pub fell_back: bool,
}

impl ResolvedSampler {
    pub fn sampler_name(&self) -> &'static str {
        self.sampler.a1111_name()
    }

    /// A1111's "Schedule type" label for this job.
    pub fn schedule_label(&self) -> &'static str {
        self.schedule.label()
    }
}

/// Resolve `sampler_name or sampler_index` plus `scheduler` as A1111 does (module docs).
pub fn resolve(sampler_request: &str, scheduler_request: Option<&str>) -> ResolvedSampler {
    let mut name = sampler_request;
    let mut split_schedule = None;
    'split: for (kind, _, label) in ScheduleKind::ALL {
        let options = std::iter::once(*label).chain(schedule_aliases(*kind).into_iter().flatten().copied());
        for option in options {
            if let Some(base) = name.strip_suffix(option).and_then(|rest| rest.strip_suffix(' ')) {
                name = base;
                split_schedule = Some(*kind);
                break 'split;
            }
        }
    }
    let (sampler, fell_back) = match sampler_exact(name) {
        Some(kind) => (kind, false),
        None => {
            if !name.is_empty() {
                tracing::warn!(requested = sampler_request, used = FALLBACK_SAMPLER.a1111_name(), "unknown sampler name; using A1111's fallback");
            }
            (FALLBACK_SAMPLER, !name.is_empty())
        }
    };
    let explicit = scheduler_request.filter(|s| !s.is_empty()).and_then(|s| {
        let found = schedule_exact(s);
        if found.is_none() {
            tracing::warn!(requested = s, "unknown scheduler; using Automatic");
        }
        found
    });
    let chosen = explicit.or(split_schedule).unwrap_or(ScheduleKind::Automatic);
    let schedule = match chosen {
        ScheduleKind::Automatic => sampler_default_schedule(sampler).unwrap_or(ScheduleKind::Automatic),
        other => other,
    };
    ResolvedSampler { sampler, schedule, fell_back }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, scheduler: Option<&str>) -> (&'static str, &'static str) {
        let r = resolve(name, scheduler);
        (r.sampler_name(), r.schedule_label())
    }

    #[test]
    fn exact_names_and_automatic_defaults() {
        assert_eq!(pair("Euler", None), ("Euler", "Automatic"));
        assert_eq!(pair("Euler a", None), ("Euler a", "Automatic"));
        assert_eq!(pair("DPM++ 2M", None), ("DPM++ 2M", "Karras"));
        assert_eq!(pair("DPM++ 2M SDE", Some("Automatic")), ("DPM++ 2M SDE", "Exponential"));
    }

    #[test]
    fn legacy_combined_names_split_off_the_schedule() {
        assert_eq!(pair("DPM++ 2M Karras", None), ("DPM++ 2M", "Karras"));
        assert_eq!(pair("Euler a Exponential", None), ("Euler a", "Exponential"));
        assert_eq!(pair("Euler SGMUniform", None), ("Euler", "SGM Uniform"));
        // An explicit scheduler wins over the split-off one.
        assert_eq!(pair("Euler Karras", Some("exponential")), ("Euler", "Exponential"));
        // "DPM++ 2M SDE" must not lose "SDE" (not a schedule label).
        assert_eq!(pair("DPM++ 2M SDE Karras", None), ("DPM++ 2M SDE", "Karras"));
    }

    #[test]
    fn aliases_resolve_and_unknown_names_fall_back() {
        assert_eq!(pair("k_euler_a", None), ("Euler a", "Automatic"));
        assert_eq!(pair("k_dpmpp_2m", None), ("DPM++ 2M", "Karras"));
        // Case-sensitive like A1111: "euler a" is not a name or alias.
        let r = resolve("euler a", None);
        assert!(r.fell_back);
        assert_eq!((r.sampler_name(), r.schedule_label()), ("DPM++ 2M", "Karras"));
        assert_eq!(pair("DPM++ SDE", None), ("DPM++ 2M", "Karras"));
        assert!(!resolve("", None).fell_back);
    }

    #[test]
    fn schedulers_resolve_by_name_or_label_and_unknown_is_automatic() {
        assert_eq!(pair("Euler", Some("karras")), ("Euler", "Karras"));
        assert_eq!(pair("Euler", Some("SGM Uniform")), ("Euler", "SGM Uniform"));
        assert_eq!(pair("Euler", Some("beta")), ("Euler", "Automatic"));
        assert_eq!(pair("Euler", Some("KARRAS")), ("Euler", "Automatic"));
    }

    #[test]
    fn lists_have_a1111_shapes() {
        let samplers = sampler_items();
        assert_eq!(samplers[0].name, "DPM++ 2M");
        assert_eq!(samplers[0].options["scheduler"], "karras");
        let euler_a = samplers.iter().find(|s| s.name == "Euler a").expect("Euler a");
        assert_eq!(euler_a.aliases, vec!["k_euler_a", "k_euler_ancestral"]);
        let schedulers = scheduler_items();
        assert_eq!((schedulers[0].name.as_str(), schedulers[0].label.as_str()), ("automatic", "Automatic"));
        let karras = schedulers.iter().find(|s| s.name == "karras").expect("karras");
        assert_eq!(karras.default_rho, 7.0);
        let sgm = schedulers.iter().find(|s| s.name == "sgm_uniform").expect("sgm");
        assert_eq!((sgm.aliases.clone(), sgm.need_inner_model), (Some(vec!["SGMUniform".to_string()]), true));
    }
}
