//! Adapters that make a plugin instance look like a built-in step.
//!
//! Each adapter owns one wasmtime `Store` (so one instance, one linear memory) and the handle of
//! the resource the plugin's `open` returned. Every call names the plugin in its errors.

use async_trait::async_trait;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::bindings::{sink, source, transform, types as wit};
use super::{AssetBytes, LoadedPlugin, PluginRuntime, State, convert};
use crate::batch::Batch;
use crate::step::{Sink, Source, Transform};

/// Shared by the three adapters: the store, the resource, and the plugin's name for errors.
struct Instance<B> {
    store: Store<State>,
    bindings: B,
    handle: ResourceAny,
    plugin: String,
}

impl<B> Instance<B> {
    /// A trap (the plugin crashed, or broke a limit) or a failed host call.
    fn trapped(&self, e: wasmtime::Error) -> anyhow::Error {
        anyhow::anyhow!("plugin `{}` trapped: {e:#}", self.plugin)
    }

    /// An error the plugin returned through the contract.
    fn failed(&self, e: wit::Error) -> anyhow::Error {
        match e.row {
            Some(row) => anyhow::anyhow!("plugin `{}` failed at row {row} of the batch: {}", self.plugin, e.message),
            None => anyhow::anyhow!("plugin `{}` failed: {}", self.plugin, e.message),
        }
    }

    fn check(&self, batch: wit::Batch) -> anyhow::Result<Batch> {
        convert::from_wit(batch)
            .map_err(|e| anyhow::anyhow!("plugin `{}` returned a malformed batch: {e}", self.plugin))
    }

    fn failed_to_open(plugin: &str, message: String) -> anyhow::Error {
        anyhow::anyhow!("plugin `{plugin}` failed to open: {message}")
    }
}

pub struct PluginTransform(Instance<transform::TransformPlugin>);

impl PluginTransform {
    /// Instantiates the plugin and opens its transformer with the step's config (JSON).
    pub async fn open(
        runtime: &PluginRuntime,
        plugin: &LoadedPlugin,
        step: &str,
        config: &str,
        assets: AssetBytes,
    ) -> anyhow::Result<PluginTransform> {
        let name = plugin.file_name();
        let mut store = runtime.store(step, assets);
        let bindings = transform::TransformPluginPre::new(plugin.pre.clone())?.instantiate_async(&mut store).await?;
        let handle = bindings
            .etl_plugin_transform()
            .transformer()
            .call_open(&mut store, config)
            .await
            .map_err(|e| anyhow::anyhow!("plugin `{name}` trapped while opening: {e:#}"))?
            .map_err(|m| Instance::<()>::failed_to_open(&name, m))?;
        Ok(PluginTransform(Instance { store, bindings, handle, plugin: name }))
    }
}

#[async_trait]
impl Transform for PluginTransform {
    async fn process(&mut self, batch: Batch) -> anyhow::Result<Batch> {
        let i = &mut self.0;
        let input = convert::to_wit(batch);
        let result = i.bindings.etl_plugin_transform().transformer().call_process(&mut i.store, i.handle, &input).await;
        match result {
            Ok(Ok(output)) => i.check(output),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }

    async fn finish(&mut self) -> anyhow::Result<Option<Batch>> {
        let i = &mut self.0;
        let result = i.bindings.etl_plugin_transform().transformer().call_finish(&mut i.store, i.handle).await;
        match result {
            Ok(Ok(Some(output))) => i.check(output).map(Some),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}

pub struct PluginSource {
    instance: Instance<source::SourcePlugin>,
    batch_rows: u32,
}

impl PluginSource {
    pub async fn open(
        runtime: &PluginRuntime,
        plugin: &LoadedPlugin,
        step: &str,
        config: &str,
        assets: AssetBytes,
        batch_rows: usize,
    ) -> anyhow::Result<PluginSource> {
        let name = plugin.file_name();
        let mut store = runtime.store(step, assets);
        let bindings = source::SourcePluginPre::new(plugin.pre.clone())?.instantiate_async(&mut store).await?;
        let handle = bindings
            .etl_plugin_source()
            .reader()
            .call_open(&mut store, config)
            .await
            .map_err(|e| anyhow::anyhow!("plugin `{name}` trapped while opening: {e:#}"))?
            .map_err(|m| Instance::<()>::failed_to_open(&name, m))?;
        let batch_rows = u32::try_from(batch_rows).unwrap_or(u32::MAX);
        Ok(PluginSource { instance: Instance { store, bindings, handle, plugin: name }, batch_rows })
    }
}

#[async_trait]
impl Source for PluginSource {
    async fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        let i = &mut self.instance;
        let result = i.bindings.etl_plugin_source().reader().call_next(&mut i.store, i.handle, self.batch_rows).await;
        match result {
            Ok(Ok(Some(output))) => i.check(output).map(Some),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}

pub struct PluginSink(Instance<sink::SinkPlugin>);

impl PluginSink {
    pub async fn open(
        runtime: &PluginRuntime,
        plugin: &LoadedPlugin,
        step: &str,
        config: &str,
        assets: AssetBytes,
    ) -> anyhow::Result<PluginSink> {
        let name = plugin.file_name();
        let mut store = runtime.store(step, assets);
        let bindings = sink::SinkPluginPre::new(plugin.pre.clone())?.instantiate_async(&mut store).await?;
        let handle = bindings
            .etl_plugin_sink()
            .writer()
            .call_open(&mut store, config)
            .await
            .map_err(|e| anyhow::anyhow!("plugin `{name}` trapped while opening: {e:#}"))?
            .map_err(|m| Instance::<()>::failed_to_open(&name, m))?;
        Ok(PluginSink(Instance { store, bindings, handle, plugin: name }))
    }
}

#[async_trait]
impl Sink for PluginSink {
    async fn write(&mut self, batch: Batch) -> anyhow::Result<()> {
        let i = &mut self.0;
        let input = convert::to_wit(batch);
        let result = i.bindings.etl_plugin_sink().writer().call_write(&mut i.store, i.handle, &input).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        let i = &mut self.0;
        let result = i.bindings.etl_plugin_sink().writer().call_finish(&mut i.store, i.handle).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(i.failed(e)),
            Err(e) => Err(i.trapped(e)),
        }
    }
}
