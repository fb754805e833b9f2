//! Readings/s through each transform plugin, in one run on the same input:
//! the plugin's `.wasm` (target/plugins, the `plugin` profile that ships)
//! in wasmtime, called as omh-host calls it (async export, epoch
//! interruption with a yield per tick), vs the same crate compiled natively
//! and called through the same `omh_sdk::Transform` trait. Both sides are
//! bound once to the workload's tag table, then start each call from a
//! borrowed batch of tag indexes and end with an owned one: the WASM side
//! copies it into the guest and back, the native side clones it.
//!
//! Batch sizes 1 to 1000 give the per-call overhead: a call's time at
//! batch 1 minus the per-reading time at 1000.
//!
//! Run: `scripts/build-plugins && cargo bench -p omh-host --bench transforms`
//! (`OMH_BENCH_CASES=rename` runs the plugins whose name contains it).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use omh_sdk::Transform;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod wasm {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
        imports: { default: trappable },
        exports: { default: async },
    });
}

use wasm::exports::omh::plugin::transform_api::TaggedReading as WitReading;
use wasm::omh::plugin::types as wit;

const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
/// Distinct tags in the workload; batches cycle through them.
const TAGS: usize = 1000;
const MEASURE: Duration = Duration::from_millis(400);
/// As omh-host's engine (host/src/plugin/engine.rs).
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// One transform under test: its plugin, its settings for both sides, and
/// the native measurement of its crate.
struct Case {
    plugin: &'static str,
    settings: String,
    native: fn(&str, &[String], &[Vec<omh_sdk::TaggedReading>; 2]) -> f64,
}

fn cases() -> Vec<Case> {
    // `"t0": rule(0), "t1": rule(1), ...` for every tag of the workload.
    let per_tag = |rule: &dyn Fn(usize) -> String| -> String {
        let tags: Vec<String> = (0..TAGS)
            .map(|i| format!("\"t{i}\": {}", rule(i)))
            .collect();
        tags.join(", ")
    };
    vec![
        Case {
            plugin: "scale",
            settings: format!(
                r#"{{"tags": {{{}}}}}"#,
                per_tag(&|_| r#"{"scale": 0.1, "offset": -40}"#.into())
            ),
            native: measure_native::<scale::Scale>,
        },
        Case {
            plugin: "deadband",
            settings: r#"{"default": {"absolute": 0.5}}"#.into(),
            native: measure_native::<deadband::Deadband>,
        },
        Case {
            plugin: "rename",
            settings: format!(
                r#"{{"prefix": "acme/plant1/line2/", "tags": {{{}}}}}"#,
                per_tag(&|i| format!("\"oven/zone{i}/temperature\""))
            ),
            native: measure_native::<rename::Rename>,
        },
        Case {
            plugin: "units",
            settings: format!(
                r#"{{"tags": {{{}}}}}"#,
                per_tag(&|_| r#"{"from": "degC", "to": "degF"}"#.into())
            ),
            native: measure_native::<units::Units>,
        },
        Case {
            plugin: "expression",
            settings: format!(
                r#"{{"tags": {{{}}}, "computed": {{"mean": "(t0 + t1) / 2"}}}}"#,
                per_tag(&|_| r#""value * 0.1 + 2""#.into())
            ),
            native: measure_native::<expression::Expression>,
        },
    ]
}

/// The tag table both sides are bound to: `t0`, `t1`, ...
fn tag_table() -> Vec<String> {
    (0..TAGS).map(|i| format!("t{i}")).collect()
}

/// Two batches of `size` readings that alternate: every odd tag moves by
/// 1.0 between them, so a deadband of 0.5 passes half of each batch.
fn batches(size: usize) -> [Vec<omh_sdk::TaggedReading>; 2] {
    [0, 1].map(|phase| {
        (0..size)
            .map(|i| omh_sdk::TaggedReading {
                tag: (i % TAGS) as u32,
                value: omh_sdk::Value::Int((200 + i % 100 + (i % 2) * phase) as i64),
                quality: omh_sdk::Quality::Good,
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect()
    })
}

/// Readings/s processed in [`MEASURE`], calling `call` with the batches in turn.
fn rate(size: usize, mut call: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < MEASURE {
        call(calls % 2);
        calls += 1;
    }
    (calls * size) as f64 / started.elapsed().as_secs_f64()
}

fn measure_native<T: Transform>(
    settings: &str,
    tags: &[String],
    batches: &[Vec<omh_sdk::TaggedReading>; 2],
) -> f64 {
    let mut transform = T::configure(settings).expect("settings are valid");
    transform.bind(tags).expect("the tags bind");
    rate(batches[0].len(), |phase| {
        black_box(transform.process(batches[phase].clone()).unwrap());
    })
}

struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasm::omh::plugin::logging::Host for Sandbox {
    fn log(
        &mut self,
        _: wasm::omh::plugin::logging::Level,
        _: String,
        _: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl wasm::omh::plugin::clock::Host for Sandbox {
    fn now_ms(&mut self) -> wasmtime::Result<i64> {
        Ok(0)
    }
}

impl wit::Host for Sandbox {}

fn to_wit(batch: &[omh_sdk::TaggedReading]) -> Vec<WitReading> {
    batch
        .iter()
        .map(|reading| WitReading {
            tag: reading.tag,
            value: match &reading.value {
                omh_sdk::Value::Int(i) => wit::Value::Int(*i),
                other => panic!("the workload has integers only, not {other:?}"),
            },
            quality: wit::Quality::Good,
            timestamp_ms: reading.timestamp_ms,
        })
        .collect()
}

/// Loads the plugin, configures and binds a fresh instance per batch size
/// and measures it; readings/s per batch size.
async fn measure_wasm(
    engine: &Engine,
    linker: &Linker<Sandbox>,
    case: &Case,
    tags: &[String],
    batches: &[[Vec<omh_sdk::TaggedReading>; 2]],
) -> Vec<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{}.wasm", case.plugin));
    let component = Component::from_file(engine, &path)
        .unwrap_or_else(|e| panic!("{}: {e:?} (run scripts/build-plugins)", path.display()));
    let pre = wasm::TransformPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let mut rates = Vec::new();
    for pair in batches {
        let sandbox = Sandbox {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(engine, sandbox);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let bindings = pre.instantiate_async(&mut store).await.unwrap();
        let api = bindings.omh_plugin_transform_api();
        api.call_configure(&mut store, &case.settings)
            .await
            .unwrap()
            .expect("settings are valid");
        api.call_bind(&mut store, tags)
            .await
            .unwrap()
            .expect("the tags bind");
        let wit_pair = [to_wit(&pair[0]), to_wit(&pair[1])];
        let size = pair[0].len();
        let started = Instant::now();
        let mut calls = 0;
        while started.elapsed() < MEASURE {
            let output = api
                .call_process(&mut store, &wit_pair[calls % 2])
                .await
                .unwrap()
                .unwrap();
            black_box(output);
            calls += 1;
        }
        rates.push((calls * size) as f64 / started.elapsed().as_secs_f64());
    }
    rates
}

fn engine() -> Engine {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config).unwrap();
    let weak = engine.weak();
    std::thread::spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
    engine
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = engine();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasm::Transform::add_to_linker::<_, HasSelf<_>>(&mut linker, |sandbox| sandbox).unwrap();
    let tags = tag_table();
    let batches: Vec<_> = BATCH_SIZES.iter().map(|&size| batches(size)).collect();

    println!(
        "transform bench: {MEASURE:?} per measurement, {TAGS} tags, batches cycle through them\n"
    );
    println!(
        "{:<11} {:>6} {:>15} {:>15} {:>7} {:>13}",
        "transform", "batch", "native rdg/s", "wasm rdg/s", "wasm %", "wasm us/call"
    );
    let mut overheads = Vec::new();
    // OMH_BENCH_CASES=<substring of a plugin's name> runs only those cases.
    let only = std::env::var("OMH_BENCH_CASES").unwrap_or_default();
    for case in cases()
        .into_iter()
        .filter(|case| case.plugin.contains(&only))
    {
        let wasm = runtime.block_on(measure_wasm(&engine, &linker, &case, &tags, &batches));
        for ((size, pair), wasm) in BATCH_SIZES.iter().zip(&batches).zip(&wasm) {
            let native = (case.native)(&case.settings, &tags, pair);
            println!(
                "{:<11} {size:>6} {native:>15.0} {wasm:>15.0} {:>6.0}% {:>13.2}",
                case.plugin,
                100.0 * wasm / native,
                1e6 * *size as f64 / wasm
            );
        }
        let per_call_at_1 = 1e6 / wasm[0];
        let per_reading_at_1000 = 1e6 / wasm[wasm.len() - 1];
        overheads.push((case.plugin, per_call_at_1 - per_reading_at_1000));
    }
    println!("\nWASM per-call overhead (call at batch 1 minus one reading's share at batch 1000):");
    for (plugin, overhead) in overheads {
        println!("  {plugin:<11} {overhead:.2} us");
    }
}
