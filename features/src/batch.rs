//! Batch features: one SQL query per view, run by DataFusion over CSV or
//! Parquet files, one row per entity key. Typed from the query's Arrow
//! schema; loaded into memory at start and swapped whole on refresh, so a
//! read never waits for a refresh.

use std::sync::Arc;

use ahash::AHashMap;
use arc_swap::ArcSwap;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use verdict_core::{Catalogue, Value, ValueType};

use crate::FeatureError;
use crate::defs::{BatchView, FeatureDefs};

type Rows = AHashMap<Box<str>, Box<[Value]>>;

struct View {
    def: BatchView,
    /// Output columns (all but the key): name, feature slot, type.
    columns: Vec<(String, usize, ValueType)>,
    rows: ArcSwap<Rows>,
}

/// Every batch view of a store.
pub struct BatchTables {
    views: Vec<View>,
    /// Views per entity kind.
    by_entity: Vec<Vec<usize>>,
}

fn value_type(dt: &DataType) -> Option<ValueType> {
    Some(match dt {
        DataType::Boolean => ValueType::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValueType::String,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => ValueType::Timestamp,
        d if d.is_numeric() => ValueType::Number,
        _ => return None,
    })
}

/// Runs `f` on a runtime of its own thread, so that loading works from
/// inside or outside an async runtime alike.
fn on_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(f())
    })
    .join()
    .expect("the batch loader thread does not panic")
}

async fn query(
    def: &BatchView,
) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>), String> {
    let ctx = SessionContext::new();
    for (name, path) in &def.tables {
        let p = path.to_string_lossy();
        if !path.exists() {
            return Err(format!("table `{name}`: {} does not exist", path.display()));
        }
        let r = if p.ends_with(".parquet") {
            ctx.register_parquet(name, p.as_ref(), ParquetReadOptions::default())
                .await
        } else {
            ctx.register_csv(name, p.as_ref(), CsvReadOptions::new())
                .await
        };
        r.map_err(|e| format!("table `{name}` ({}): {e}", path.display()))?;
    }
    let df = ctx
        .sql(&def.sql)
        .await
        .map_err(|e| format!("the query: {e}"))?;
    let schema: datafusion::arrow::datatypes::SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .collect()
        .await
        .map_err(|e| format!("running the query: {e}"))?;
    Ok((schema, batches))
}

fn error(def: &BatchView, message: String) -> FeatureError {
    FeatureError::Batch {
        view: def.name.clone(),
        message,
    }
}

fn rows_of(
    def: &BatchView,
    batches: &[RecordBatch],
    columns: &[(String, usize, ValueType)],
) -> Result<Rows, FeatureError> {
    let mut rows = Rows::new();
    for batch in batches {
        let key = batch.column_by_name(&def.key).ok_or_else(|| {
            error(
                def,
                format!("the query returns no key column `{}`", def.key),
            )
        })?;
        let key = cast(key, &DataType::Utf8).map_err(|e| error(def, e.to_string()))?;
        let key = key.as_string::<i32>();
        let mut cols = Vec::with_capacity(columns.len());
        for (name, _, ty) in columns {
            let c = batch
                .column_by_name(name)
                .expect("the column is in the schema");
            let target = match ty {
                ValueType::Number => DataType::Float64,
                ValueType::String => DataType::Utf8,
                ValueType::Bool => DataType::Boolean,
                ValueType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
            };
            let mut c =
                cast(c, &target).map_err(|e| error(def, format!("column `{name}`: {e}")))?;
            if *ty == ValueType::Timestamp {
                c = cast(&c, &DataType::Int64).map_err(|e| error(def, e.to_string()))?;
            }
            cols.push((c, *ty));
        }
        for r in 0..batch.num_rows() {
            if key.is_null(r) {
                continue;
            }
            let values: Box<[Value]> = cols
                .iter()
                .map(|(c, ty)| {
                    if c.is_null(r) {
                        return Value::Missing;
                    }
                    match ty {
                        ValueType::Number => {
                            Value::Number(c.as_primitive::<Float64Type>().value(r))
                        }
                        ValueType::String => Value::String(c.as_string::<i32>().value(r).into()),
                        ValueType::Bool => Value::Bool(c.as_boolean().value(r)),
                        ValueType::Timestamp => {
                            Value::Timestamp(c.as_primitive::<Int64Type>().value(r))
                        }
                    }
                })
                .collect();
            if rows.insert(key.value(r).into(), values).is_some() {
                return Err(error(
                    def,
                    format!("the key `{}` has more than one row", key.value(r)),
                ));
            }
        }
    }
    Ok(rows)
}

impl BatchTables {
    /// Plans and loads every view; registers its columns in the catalogue
    /// with the types of the query's result.
    pub fn load(
        defs: &FeatureDefs,
        catalogue: &mut Catalogue,
    ) -> Result<BatchTables, FeatureError> {
        let mut views = Vec::new();
        let mut by_entity = vec![Vec::new(); defs.entities.len()];
        for def in &defs.batches {
            let d = def.clone();
            let (schema, batches) = on_runtime(move || Box::pin(async move { query(&d).await }))
                .map_err(|m| error(def, m))?;
            if schema.field_with_name(&def.key).is_err() {
                return Err(error(
                    def,
                    format!("the query returns no key column `{}`", def.key),
                ));
            }
            let mut columns = Vec::new();
            for field in schema.fields() {
                if field.name() == &def.key {
                    continue;
                }
                let ty = value_type(field.data_type()).ok_or_else(|| {
                    error(
                        def,
                        format!(
                            "column `{}` has type {}, which features cannot hold",
                            field.name(),
                            field.data_type()
                        ),
                    )
                })?;
                let slot = catalogue.add_feature(&defs.entities[def.entity].name, field.name(), ty);
                columns.push((field.name().clone(), slot.index as usize, ty));
            }
            let rows = rows_of(def, &batches, &columns)?;
            tracing::info!(view = %def.name, rows = rows.len(), columns = columns.len(), "batch features loaded");
            by_entity[def.entity].push(views.len());
            views.push(View {
                def: def.clone(),
                columns,
                rows: ArcSwap::from_pointee(rows),
            });
        }
        Ok(BatchTables { views, by_entity })
    }

    /// Runs every view's query again and swaps its rows in; a view whose
    /// query fails keeps its rows.
    pub fn refresh(&self) -> Result<(), FeatureError> {
        let mut first = None;
        for view in &self.views {
            let d = view.def.clone();
            let result = on_runtime(move || Box::pin(async move { query(&d).await }))
                .map_err(|m| error(&view.def, m))
                .and_then(|(_, batches)| rows_of(&view.def, &batches, &view.columns));
            match result {
                Ok(rows) => {
                    tracing::info!(view = %view.def.name, rows = rows.len(), "batch features refreshed");
                    view.rows.store(Arc::new(rows));
                }
                Err(e) => {
                    tracing::warn!(view = %view.def.name, error = %e, "batch refresh failed; the previous rows keep serving");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The shortest refresh interval of any view, if there are views.
    pub fn refresh_every(&self) -> Option<std::time::Duration> {
        self.views
            .iter()
            .map(|v| std::time::Duration::from_secs(v.def.refresh_secs))
            .min()
    }

    /// Copies the batch features of `key` into `out` (missing when the key
    /// has no row).
    pub fn read(&self, entity: usize, key: &str, out: &mut [Value]) {
        for &v in &self.by_entity[entity] {
            let view = &self.views[v];
            let rows = view.rows.load();
            let row = rows.get(key);
            for (i, (_, slot, _)) in view.columns.iter().enumerate() {
                if let Some(o) = out.get_mut(*slot) {
                    *o = row.map_or(Value::Missing, |r| r[i].clone());
                }
            }
        }
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.views
            .iter()
            .map(|v| v.rows.load().len() * (48 + v.columns.len() * 24))
            .sum()
    }
}
