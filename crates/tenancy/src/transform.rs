//! The shared-mode schema transform (DESIGN §3): single-tenant migrations in, the
//! statements that hold many tenants' rows in the same tables out.
//!
//! Every script is parsed into a PostgreSQL AST with `sqlparser`, rewritten, and printed
//! back; no SQL text is ever edited as a string (the two forms sqlparser 0.59 has no
//! node for, `FORCE ROW LEVEL SECURITY` and `ON DELETE SET NULL (columns)`, are printed
//! from AST nodes by small `Display` types here). For each `CREATE TABLE` the transform
//! adds `tenant_id` as the first column and puts it first in the primary key, every
//! unique constraint and every foreign key; it then enables and forces row-level
//! security, adds the `tenant_isolation` policy and grants the data role its rights.
//! Indexes get `tenant_id` first too. What it cannot make safe (views, functions,
//! triggers, seed rows, privileges, …) refuses the whole script, naming the statement.
//!
//! ```
//! use tenancy::transform::SharedTransform;
//!
//! let mut transform = SharedTransform::new("tenancy_data");
//! let statements = transform
//!     .script("0001_notes.sql", "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);")
//!     .unwrap();
//! assert!(statements[0].starts_with("CREATE TABLE notes (tenant_id UUID NOT NULL"));
//! assert!(statements[0].ends_with("PRIMARY KEY (tenant_id, id))"));
//! ```
//!
//! [`AUDIT_SQL`] and [`audit_failures`] describe the start-up audit of a shared store.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use sqlparser::ast::helpers::attached_token::AttachedToken;
use sqlparser::ast::{
    Action, AlterTableOperation, BinaryOperator, ColumnDef, ColumnOption, ColumnOptionDef,
    ConstraintCharacteristics, CreateIndex, CreateTable, DataType, Expr, GeneratedAs, GrantObjects,
    Grantee, GranteeName, GranteesType, Ident, IndexColumn, IndexType, KeyOrIndexDisplay,
    NullsDistinctOption, ObjectName, ObjectType, OrderByExpr, OrderByOptions, Privileges,
    ReferentialAction, RenameTableNameKind, Statement, TableConstraint,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::migrations::Script;

/// The column that holds the tenant of every shared row.
pub const TENANT_COLUMN: &str = "tenant_id";
/// The row-level security policy the transform adds to every table.
pub const POLICY_NAME: &str = "tenant_isolation";
/// The setting that carries the current tenant, set local to each transaction.
pub const TENANT_SETTING: &str = "tenancy.tenant_id";

/// The current tenant, or NULL when the setting is unset or empty: then no row matches
/// the policy and WITH CHECK refuses every write, instead of an error (or worse, a
/// match). The same expression is the column default: an insert without a tenant is
/// refused by WITH CHECK, and by `tenant_id`'s NOT NULL behind it.
const CURRENT_TENANT_SQL: &str = "NULLIF(current_setting('tenancy.tenant_id', true), '')::uuid";

// A constant, parsed once and covered by the tests: it cannot fail at run time.
#[allow(clippy::expect_used)]
static CURRENT_TENANT: LazyLock<Expr> = LazyLock::new(|| {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(CURRENT_TENANT_SQL)
        .and_then(|mut p| p.parse_expr())
        .expect("CURRENT_TENANT_SQL is valid SQL")
});

/// Why a script cannot run in shared mode, and which statement says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("file {file}, statement {statement} (`{excerpt}`): {reason}")]
pub struct TransformError {
    pub file: String,
    /// 1-based, counting the statements of the file.
    pub statement: usize,
    /// The start of the statement as written, whitespace collapsed, at most 80 chars.
    pub excerpt: String,
    pub reason: String,
}

/// The transform of one store's migrations, applied script by script in version order.
///
/// It remembers the primary key of every table created so far, so that a
/// `REFERENCES t` without columns resolves. Feed it every script of the set from the
/// first, including those already applied, and it stays pure: no database is consulted.
#[derive(Debug, Clone)]
pub struct SharedTransform {
    data_role: Ident,
    /// By the table's unqualified, case-folded name: its primary-key columns, if any,
    /// without `tenant_id`.
    tables: HashMap<String, Option<Vec<Ident>>>,
}

/// Transforms a whole migration set for a shared store: the statements of each script,
/// in order.
pub fn shared_scripts(
    data_role: &str,
    scripts: &[Script<'_>],
) -> Result<Vec<Vec<String>>, TransformError> {
    let mut transform = SharedTransform::new(data_role);
    scripts
        .iter()
        .map(|s| transform.script(s.file, s.sql))
        .collect()
}

impl SharedTransform {
    /// `data_role` is the role the data API connects as; it is granted DML on every table.
    pub fn new(data_role: &str) -> SharedTransform {
        SharedTransform {
            data_role: Ident::with_quote('"', data_role),
            tables: HashMap::new(),
        }
    }

    /// Transforms one migration script into the statements to run, in order. On error
    /// nothing of the script is produced and the transform is left as it was.
    pub fn script(&mut self, file: &str, sql: &str) -> Result<Vec<String>, TransformError> {
        let fragments = split_statements(sql).map_err(|e| TransformError {
            file: file.to_owned(),
            statement: e.statement,
            excerpt: excerpt(&e.text),
            reason: format!("cannot parse it: {}", e.reason),
        })?;
        let mut next = self.clone();
        let mut out = Vec::new();
        for (i, Fragment { tokens, text, .. }) in fragments.into_iter().enumerate() {
            let refuse = |reason: String| TransformError {
                file: file.to_owned(),
                statement: i + 1,
                excerpt: excerpt(&text),
                reason,
            };
            let statement =
                parse_statement(tokens).map_err(|e| refuse(format!("cannot parse it: {e}")))?;
            next.statement(statement, &mut out).map_err(refuse)?;
        }
        *self = next;
        Ok(out.iter().map(ToString::to_string).collect())
    }

    fn statement(&mut self, statement: Statement, out: &mut Vec<Emit>) -> Result<(), String> {
        match statement {
            Statement::CreateTable(table) => self.create_table(table, out),
            Statement::CreateIndex(index) => create_index(index, out),
            Statement::AlterTable {
                name,
                if_exists,
                only,
                operations,
                location,
                on_cluster,
                iceberg,
                end_token,
            } => {
                let (operations, separate) = self.alter_table(&name, operations)?;
                if !operations.is_empty() {
                    out.push(Emit::sql(Statement::AlterTable {
                        name,
                        if_exists,
                        only,
                        operations,
                        location,
                        on_cluster,
                        iceberg,
                        end_token,
                    }));
                }
                out.extend(separate.into_iter().map(Emit::ForeignKey));
                Ok(())
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                ref names,
                ..
            } => {
                for name in names {
                    self.tables.remove(&table_key(name));
                }
                out.push(Emit::sql(statement));
                Ok(())
            }
            Statement::Drop {
                object_type: ObjectType::Index,
                ..
            }
            | Statement::AlterIndex { .. }
            | Statement::Comment { .. } => {
                out.push(Emit::sql(statement));
                Ok(())
            }
            Statement::Insert(_)
            | Statement::Update { .. }
            | Statement::Delete(_)
            | Statement::Merge { .. }
            | Statement::Copy { .. }
            | Statement::Truncate { .. }
            | Statement::Query(_) => Err(
                "data statements cannot run in a shared-mode migration: a shared store runs \
                 each migration once for all its tenants, so per-tenant rows cannot be \
                 expressed; seed tenant data when the tenant is provisioned instead"
                    .to_owned(),
            ),
            Statement::CreateView { .. } | Statement::AlterView { .. } => Err(
                "views are not supported in shared mode: a view reads with its owner's rights \
                 and would bypass row-level security"
                    .to_owned(),
            ),
            Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateTrigger(_) => Err(
                "functions, procedures and triggers are not supported in shared mode: they \
                 could read or write across tenants"
                    .to_owned(),
            ),
            Statement::CreatePolicy { .. }
            | Statement::AlterPolicy { .. }
            | Statement::DropPolicy { .. }
            | Statement::Grant { .. }
            | Statement::Revoke { .. } => Err(
                "row-level security policies and privileges belong to tenancy in shared mode \
                 and cannot be changed by a migration"
                    .to_owned(),
            ),
            Statement::CreateSequence { .. } => Err(
                "sequences are not supported in shared mode (the data role could not use \
                 them); use a GENERATED BY DEFAULT AS IDENTITY column"
                    .to_owned(),
            ),
            Statement::Drop { object_type, .. } => Err(format!(
                "DROP {object_type} is not supported in shared mode (only DROP TABLE and DROP INDEX)"
            )),
            _ => Err(
                "this statement is not supported in shared mode: a shared-mode migration may \
                 CREATE, ALTER and DROP tables and indexes, and COMMENT ON them"
                    .to_owned(),
            ),
        }
    }

    fn create_table(&mut self, mut table: CreateTable, out: &mut Vec<Emit>) -> Result<(), String> {
        let name = table.name.clone();
        let unsupported = [
            (table.temporary, "temporary tables"),
            (table.query.is_some(), "CREATE TABLE … AS"),
            (
                table.like.is_some() || table.clone.is_some(),
                "CREATE TABLE … LIKE",
            ),
            (table.inherits.is_some(), "table inheritance"),
            (table.partition_by.is_some(), "partitioned tables"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(used, _)| *used) {
            return Err(format!("{what} cannot be used in shared mode"));
        }
        if let Some(column) = table.columns.iter().find(|c| is_tenant_column(&c.name)) {
            return Err(format!(
                "table {name} already has a column {}: in shared mode tenancy adds tenant_id itself",
                column.name
            ));
        }

        // Column-level keys become table-level ones, so tenant_id can lead them.
        let mut keys = Vec::new();
        let mut foreign_keys = Vec::new();
        for column in &mut table.columns {
            let extracted = extract_column_keys(column);
            keys.extend(extracted.keys);
            foreign_keys.extend(extracted.foreign_keys);
        }
        let mut checks = Vec::new();
        for constraint in std::mem::take(&mut table.constraints) {
            match constraint {
                TableConstraint::PrimaryKey { .. } | TableConstraint::Unique { .. } => {
                    keys.push(constraint)
                }
                TableConstraint::Check { .. } => checks.push(constraint),
                other => foreign_keys.push(ForeignKey::from_constraint(other)?),
            }
        }

        let primary_key = keys.iter().find_map(primary_key_columns);
        let key = table_key(&name);
        // Recorded first so that a table can reference itself without naming columns.
        self.tables.insert(key, primary_key);

        let table_name = table_key(&name);
        let mut constraints: Vec<TableConstraint> =
            keys.into_iter().map(|k| lead_key(k, &table_name)).collect();
        let mut separate = Vec::new();
        for fk in foreign_keys {
            match self.foreign_key(fk, &table_name)? {
                Placed::Inline(c) => constraints.push(c),
                Placed::Separate(fk) => separate.push(AddForeignKey {
                    table: name.clone(),
                    fk,
                    not_valid: false,
                }),
            }
        }
        constraints.extend(checks);
        table.constraints = constraints;
        table.columns.insert(0, tenant_column());

        out.push(Emit::sql(Statement::CreateTable(table)));
        out.extend(separate.into_iter().map(Emit::ForeignKey));
        out.push(Emit::sql(alter(
            &name,
            AlterTableOperation::EnableRowLevelSecurity,
        )));
        out.push(Emit::ForceRowLevelSecurity(name.clone()));
        out.push(Emit::sql(policy(&name)));
        out.push(Emit::sql(self.grant(&name)));
        Ok(())
    }

    /// The operations of an `ALTER TABLE` rewritten, and the foreign keys that must be
    /// added by a statement of their own.
    fn alter_table(
        &mut self,
        table: &ObjectName,
        operations: Vec<AlterTableOperation>,
    ) -> Result<(Vec<AlterTableOperation>, Vec<AddForeignKey>), String> {
        let key = table_key(table);
        let mut kept = Vec::new();
        let mut separate = Vec::new();
        let tenant_column_refused = |column: &Ident| {
            Err(format!(
                "the column {column} is tenancy's in shared mode and cannot be altered by a migration"
            ))
        };
        for op in operations {
            match op {
                AlterTableOperation::AddColumn {
                    column_keyword,
                    if_not_exists,
                    mut column_def,
                    column_position,
                } => {
                    if is_tenant_column(&column_def.name) {
                        return tenant_column_refused(&column_def.name);
                    }
                    let extracted = extract_column_keys(&mut column_def);
                    kept.push(AlterTableOperation::AddColumn {
                        column_keyword,
                        if_not_exists,
                        column_def,
                        column_position,
                    });
                    for constraint in extracted.keys {
                        self.add_key(&key, &constraint);
                        kept.push(AlterTableOperation::AddConstraint {
                            constraint: lead_key(constraint, &key),
                            not_valid: false,
                        });
                    }
                    for fk in extracted.foreign_keys {
                        let placed = self.foreign_key(fk, &key)?;
                        place(placed, table, false, &mut kept, &mut separate);
                    }
                }
                AlterTableOperation::AddConstraint {
                    constraint,
                    not_valid,
                } => match constraint {
                    TableConstraint::PrimaryKey { .. } | TableConstraint::Unique { .. } => {
                        self.add_key(&key, &constraint);
                        kept.push(AlterTableOperation::AddConstraint {
                            constraint: lead_key(constraint, &key),
                            not_valid,
                        });
                    }
                    TableConstraint::ForeignKey { .. } => {
                        let placed =
                            self.foreign_key(ForeignKey::from_constraint(constraint)?, &key)?;
                        place(placed, table, not_valid, &mut kept, &mut separate);
                    }
                    other => kept.push(AlterTableOperation::AddConstraint {
                        constraint: check(other)?,
                        not_valid,
                    }),
                },
                AlterTableOperation::DropColumn {
                    ref column_names, ..
                } => {
                    if let Some(c) = column_names.iter().find(|c| is_tenant_column(c)) {
                        return tenant_column_refused(c);
                    }
                    // Dropping a key column drops the key with it.
                    if let Some(slot) = self.tables.get_mut(&key) {
                        let in_key = slot.as_ref().is_some_and(|pk| {
                            pk.iter()
                                .any(|k| column_names.iter().any(|c| same_ident(k, c)))
                        });
                        if in_key {
                            *slot = None;
                        }
                    }
                    kept.push(op);
                }
                AlterTableOperation::RenameColumn {
                    ref old_column_name,
                    ref new_column_name,
                } => {
                    for column in [old_column_name, new_column_name] {
                        if is_tenant_column(column) {
                            return tenant_column_refused(column);
                        }
                    }
                    if let Some(Some(pk)) = self.tables.get_mut(&key) {
                        for k in pk.iter_mut().filter(|k| same_ident(k, old_column_name)) {
                            *k = new_column_name.clone();
                        }
                    }
                    kept.push(op);
                }
                AlterTableOperation::AlterColumn {
                    ref column_name, ..
                } => {
                    if is_tenant_column(column_name) {
                        return tenant_column_refused(column_name);
                    }
                    kept.push(op);
                }
                AlterTableOperation::RenameTable { ref table_name } => {
                    let new_name = match table_name {
                        RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => n,
                    };
                    if let Some(pk) = self.tables.remove(&key) {
                        self.tables.insert(table_key(new_name), pk);
                    }
                    kept.push(op);
                }
                AlterTableOperation::DropConstraint { .. }
                | AlterTableOperation::RenameConstraint { .. }
                | AlterTableOperation::ValidateConstraint { .. }
                | AlterTableOperation::EnableRowLevelSecurity => kept.push(op),
                AlterTableOperation::DisableRowLevelSecurity => {
                    return Err(
                        "DISABLE ROW LEVEL SECURITY would remove the isolation between tenants"
                            .to_owned(),
                    )
                }
                other => {
                    return Err(format!(
                        "ALTER TABLE … {other} is not supported in shared mode"
                    ))
                }
            }
        }
        Ok((kept, separate))
    }

    /// Records a primary key added to a known table.
    fn add_key(&mut self, table: &str, constraint: &TableConstraint) {
        if let Some(columns) = primary_key_columns(constraint) {
            self.tables.insert(table.to_owned(), Some(columns));
        }
    }

    /// `tenant_id` first on both sides; the referenced columns resolved when omitted.
    fn foreign_key(&self, mut fk: ForeignKey, table: &str) -> Result<Placed, String> {
        // Named as PostgreSQL names it for the single-tenant statement, before tenant_id
        // joins the columns: constraint names are what violations report.
        if fk.name.is_none() {
            let columns: Vec<String> = fk.columns.iter().map(folded).collect();
            fk.name = Some(generated_ident(default_name(table, &columns, "fkey")));
        }
        let target = &fk.foreign_table;
        if fk.referred_columns.is_empty() {
            fk.referred_columns = match self.tables.get(&table_key(target)) {
                Some(Some(pk)) => pk.clone(),
                Some(None) => {
                    return Err(format!(
                        "REFERENCES {target} names no columns and {target} has no primary key"
                    ))
                }
                None => {
                    return Err(format!(
                        "REFERENCES {target} names no columns, and {target} was not created by \
                         an earlier statement of these migrations, so its primary key is \
                         unknown: name the columns, as in REFERENCES {target} (id)"
                    ))
                }
            };
        }
        if matches!(
            fk.on_update,
            Some(ReferentialAction::SetNull | ReferentialAction::SetDefault)
        ) {
            return Err(format!(
                "ON UPDATE {} would also change tenant_id, and PostgreSQL cannot limit it \
                 to some columns: use ON UPDATE CASCADE or RESTRICT",
                fk.on_update.map_or(String::new(), |a| a.to_string())
            ));
        }
        let set_columns = fk.columns.clone();
        fk.columns.insert(0, Ident::new(TENANT_COLUMN));
        fk.referred_columns.insert(0, Ident::new(TENANT_COLUMN));
        // ON DELETE SET NULL would null tenant_id too; `SET NULL (columns)` limits it to
        // the user's columns, a form sqlparser cannot print inside CREATE TABLE.
        if matches!(
            fk.on_delete,
            Some(ReferentialAction::SetNull | ReferentialAction::SetDefault)
        ) {
            return Ok(Placed::Separate(SeparateForeignKey { fk, set_columns }));
        }
        Ok(Placed::Inline(TableConstraint::ForeignKey {
            name: fk.name,
            index_name: None,
            columns: fk.columns,
            foreign_table: fk.foreign_table,
            referred_columns: fk.referred_columns,
            on_delete: fk.on_delete,
            on_update: fk.on_update,
            characteristics: fk.characteristics,
        }))
    }

    fn grant(&self, table: &ObjectName) -> Statement {
        Statement::Grant {
            privileges: Privileges::Actions(vec![
                Action::Select { columns: None },
                Action::Insert { columns: None },
                Action::Update { columns: None },
                Action::Delete,
            ]),
            objects: Some(GrantObjects::Tables(vec![table.clone()])),
            grantees: vec![Grantee {
                grantee_type: GranteesType::None,
                name: Some(GranteeName::ObjectName(ObjectName::from(vec![self
                    .data_role
                    .clone()]))),
            }],
            with_grant_option: false,
            as_grantor: None,
            granted_by: None,
            current_grants: None,
        }
    }
}

/// `CREATE [UNIQUE] INDEX`: `tenant_id` first for B-tree indexes (the default). Other
/// methods cannot index a uuid next to their columns without extensions, and are kept as
/// written: the policy still filters what they find.
fn create_index(mut index: CreateIndex, out: &mut Vec<Emit>) -> Result<(), String> {
    let btree = matches!(index.using, None | Some(IndexType::BTree));
    if index.name.is_none() {
        let columns: Option<Vec<String>> = index
            .columns
            .iter()
            .map(|c| match &c.column.expr {
                Expr::Identifier(ident) => Some(folded(ident)),
                _ => None,
            })
            .collect();
        let name = match columns {
            Some(columns) => default_name(&table_key(&index.table_name), &columns, "idx"),
            None => default_name(&table_key(&index.table_name), &["expr".to_owned()], "idx"),
        };
        index.name = Some(ObjectName::from(vec![generated_ident(name)]));
    }
    if btree {
        index.columns.insert(0, tenant_index_column());
    } else if index.unique {
        return Err(
            "a unique index in shared mode must be a B-tree index, so that tenant_id can lead it"
                .to_owned(),
        );
    }
    out.push(Emit::sql(Statement::CreateIndex(index)));
    Ok(())
}

/// A foreign key as written, before the rewrite.
#[derive(Debug, Clone)]
struct ForeignKey {
    name: Option<Ident>,
    columns: Vec<Ident>,
    foreign_table: ObjectName,
    referred_columns: Vec<Ident>,
    on_delete: Option<ReferentialAction>,
    on_update: Option<ReferentialAction>,
    characteristics: Option<ConstraintCharacteristics>,
}

impl ForeignKey {
    /// The parts of a table-level foreign key; any other constraint is refused.
    fn from_constraint(constraint: TableConstraint) -> Result<ForeignKey, String> {
        match constraint {
            TableConstraint::ForeignKey {
                name,
                index_name: _,
                columns,
                foreign_table,
                referred_columns,
                on_delete,
                on_update,
                characteristics,
            } => Ok(ForeignKey {
                name,
                columns,
                foreign_table,
                referred_columns,
                on_delete,
                on_update,
                characteristics,
            }),
            other => Err(format!(
                "the constraint `{other}` is not supported in shared mode"
            )),
        }
    }
}

/// Puts a rewritten foreign key into an ALTER TABLE's operations, or into a statement of
/// its own after it.
fn place(
    placed: Placed,
    table: &ObjectName,
    not_valid: bool,
    operations: &mut Vec<AlterTableOperation>,
    separate: &mut Vec<AddForeignKey>,
) {
    match placed {
        Placed::Inline(constraint) => operations.push(AlterTableOperation::AddConstraint {
            constraint,
            not_valid,
        }),
        Placed::Separate(fk) => separate.push(AddForeignKey {
            table: table.clone(),
            fk,
            not_valid,
        }),
    }
}

/// A CHECK constraint, kept as written; any other constraint left is refused.
fn check(constraint: TableConstraint) -> Result<TableConstraint, String> {
    match constraint {
        TableConstraint::Check { .. } => Ok(constraint),
        other => Err(format!(
            "the constraint `{other}` is not supported in shared mode"
        )),
    }
}

/// Where a rewritten foreign key goes.
enum Placed {
    /// In the table's definition (or the ALTER TABLE as written).
    Inline(TableConstraint),
    /// In an ALTER TABLE of its own, after the table.
    Separate(SeparateForeignKey),
}

/// A rewritten foreign key whose `ON DELETE SET NULL | SET DEFAULT` names its columns.
#[derive(Debug, Clone)]
struct SeparateForeignKey {
    fk: ForeignKey,
    /// The user's columns: the ones the action sets (never `tenant_id`).
    set_columns: Vec<Ident>,
}

/// The keys a column declared inline, lifted out of it.
struct ColumnKeys {
    keys: Vec<TableConstraint>,
    foreign_keys: Vec<ForeignKey>,
}

/// Moves a column's `PRIMARY KEY`, `UNIQUE` and `REFERENCES` into table-level
/// constraints (keeping their names), and turns `SERIAL` types into identity columns:
/// the data role may use an identity's sequence without a grant of its own.
fn extract_column_keys(column: &mut ColumnDef) -> ColumnKeys {
    let mut keys = Vec::new();
    let mut foreign_keys = Vec::new();
    let mut options = Vec::new();
    for ColumnOptionDef { name, option } in std::mem::take(&mut column.options) {
        match option {
            ColumnOption::Unique {
                is_primary,
                characteristics,
            } => {
                let columns = vec![index_column(column.name.clone())];
                keys.push(if is_primary {
                    TableConstraint::PrimaryKey {
                        name,
                        index_name: None,
                        index_type: None,
                        columns,
                        index_options: vec![],
                        characteristics,
                    }
                } else {
                    TableConstraint::Unique {
                        name,
                        index_name: None,
                        index_type_display: KeyOrIndexDisplay::None,
                        index_type: None,
                        columns,
                        index_options: vec![],
                        characteristics,
                        nulls_distinct: NullsDistinctOption::None,
                    }
                });
            }
            ColumnOption::ForeignKey {
                foreign_table,
                referred_columns,
                on_delete,
                on_update,
                characteristics,
            } => foreign_keys.push(ForeignKey {
                name,
                columns: vec![column.name.clone()],
                foreign_table,
                referred_columns,
                on_delete,
                on_update,
                characteristics,
            }),
            option => options.push(ColumnOptionDef { name, option }),
        }
    }
    column.options = options;
    if let Some(integer) = serial_to_integer(&column.data_type) {
        column.data_type = integer;
        column.options.push(ColumnOptionDef {
            name: None,
            option: ColumnOption::Generated {
                generated_as: GeneratedAs::ByDefault,
                sequence_options: None,
                generation_expr: None,
                generation_expr_mode: None,
                generated_keyword: true,
            },
        });
    }
    ColumnKeys { keys, foreign_keys }
}

fn serial_to_integer(data_type: &DataType) -> Option<DataType> {
    let DataType::Custom(name, modifiers) = data_type else {
        return None;
    };
    let [part] = name.0.as_slice() else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    let ident = part.as_ident()?;
    match folded(ident).as_str() {
        "smallserial" | "serial2" => Some(DataType::SmallInt(None)),
        "serial" | "serial4" => Some(DataType::Integer(None)),
        "bigserial" | "serial8" => Some(DataType::BigInt(None)),
        _ => None,
    }
}

/// A primary key or unique constraint with `tenant_id` as its first column. An unnamed
/// unique constraint gets the name PostgreSQL gives the single-tenant one (a primary key's
/// default name, `<table>_pkey`, does not depend on its columns).
fn lead_key(mut constraint: TableConstraint, table: &str) -> TableConstraint {
    if let TableConstraint::Unique { name, columns, .. } = &mut constraint {
        if name.is_none() {
            let written: Option<Vec<String>> = columns
                .iter()
                .map(|c| match &c.column.expr {
                    Expr::Identifier(ident) => Some(folded(ident)),
                    _ => None,
                })
                .collect();
            if let Some(written) = written {
                *name = Some(generated_ident(default_name(table, &written, "key")));
            }
        }
    }
    if let TableConstraint::PrimaryKey { columns, .. } | TableConstraint::Unique { columns, .. } =
        &mut constraint
    {
        columns.insert(0, tenant_index_column());
    }
    constraint
}

/// A name the transform made: printed bare when PostgreSQL would read it back unchanged.
fn generated_ident(name: String) -> Ident {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        Ident::new(name)
    } else {
        Ident::with_quote('"', name)
    }
}

/// The name PostgreSQL chooses for an unnamed constraint or index: `table_col1_col2_label`,
/// the longer of the table and column parts shortened until it fits 63 bytes.
fn default_name(table: &str, columns: &[String], label: &str) -> String {
    const MAX: usize = 63;
    let mut name1 = table.to_owned();
    let mut name2 = columns.join("_");
    let overhead = label.len() + if name2.is_empty() { 1 } else { 2 };
    while name1.len() + name2.len() + overhead > MAX {
        let longer = if name1.len() > name2.len() {
            &mut name1
        } else {
            &mut name2
        };
        longer.pop();
    }
    if name2.is_empty() {
        format!("{name1}_{label}")
    } else {
        format!("{name1}_{name2}_{label}")
    }
}

/// The columns of a primary key as written, if it is one of plain columns.
fn primary_key_columns(constraint: &TableConstraint) -> Option<Vec<Ident>> {
    let TableConstraint::PrimaryKey { columns, .. } = constraint else {
        return None;
    };
    columns
        .iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(ident) => Some(ident.clone()),
            _ => None,
        })
        .collect()
}

/// `tenant_id UUID NOT NULL DEFAULT <current tenant>`.
fn tenant_column() -> ColumnDef {
    ColumnDef {
        name: Ident::new(TENANT_COLUMN),
        data_type: DataType::Uuid,
        options: vec![
            ColumnOptionDef {
                name: None,
                option: ColumnOption::NotNull,
            },
            ColumnOptionDef {
                name: None,
                option: ColumnOption::Default(CURRENT_TENANT.clone()),
            },
        ],
    }
}

fn tenant_index_column() -> IndexColumn {
    index_column(Ident::new(TENANT_COLUMN))
}

fn index_column(name: Ident) -> IndexColumn {
    IndexColumn {
        column: OrderByExpr {
            expr: Expr::Identifier(name),
            options: OrderByOptions {
                asc: None,
                nulls_first: None,
            },
            with_fill: None,
        },
        operator_class: None,
    }
}

fn alter(table: &ObjectName, operation: AlterTableOperation) -> Statement {
    Statement::AlterTable {
        name: table.clone(),
        if_exists: false,
        only: false,
        operations: vec![operation],
        location: None,
        on_cluster: None,
        iceberg: false,
        end_token: AttachedToken::empty(),
    }
}

/// `CREATE POLICY tenant_isolation ON t USING (tenant_id = …) WITH CHECK (tenant_id = …)`.
fn policy(table: &ObjectName) -> Statement {
    let own_rows = Expr::BinaryOp {
        left: Box::new(Expr::Identifier(Ident::new(TENANT_COLUMN))),
        op: BinaryOperator::Eq,
        right: Box::new(CURRENT_TENANT.clone()),
    };
    Statement::CreatePolicy {
        name: Ident::new(POLICY_NAME),
        table_name: table.clone(),
        policy_type: None,
        command: None,
        to: None,
        using: Some(own_rows.clone()),
        with_check: Some(own_rows),
    }
}

/// PostgreSQL folds unquoted identifiers to lower case.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

fn same_ident(a: &Ident, b: &Ident) -> bool {
    folded(a) == folded(b)
}

fn is_tenant_column(ident: &Ident) -> bool {
    folded(ident) == TENANT_COLUMN
}

/// Tables are known by their unqualified name: migrations run in one schema.
fn table_key(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map(folded)
        .unwrap_or_default()
}

/// One statement the transform produces.
enum Emit {
    Sql(Box<Statement>),
    /// `ALTER TABLE t FORCE ROW LEVEL SECURITY`, which sqlparser 0.59 has no node for.
    ForceRowLevelSecurity(ObjectName),
    ForeignKey(AddForeignKey),
}

/// `ALTER TABLE t ADD [CONSTRAINT n] FOREIGN KEY (…) REFERENCES r (…) ON DELETE SET NULL
/// (…) …`: printed from AST nodes, since sqlparser 0.59 cannot print the column list of
/// a referential action.
struct AddForeignKey {
    table: ObjectName,
    fk: SeparateForeignKey,
    not_valid: bool,
}

impl Emit {
    fn sql(statement: Statement) -> Emit {
        Emit::Sql(Box::new(statement))
    }
}

impl fmt::Display for Emit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Emit::Sql(statement) => write!(f, "{statement}"),
            Emit::ForceRowLevelSecurity(table) => {
                write!(f, "ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            }
            Emit::ForeignKey(add) => write!(f, "{add}"),
        }
    }
}

impl fmt::Display for AddForeignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SeparateForeignKey { fk, set_columns } = &self.fk;
        write!(f, "ALTER TABLE {} ADD ", self.table)?;
        if let Some(name) = &fk.name {
            write!(f, "CONSTRAINT {name} ")?;
        }
        write!(
            f,
            "FOREIGN KEY ({}) REFERENCES {} ({})",
            Commas(&fk.columns),
            fk.foreign_table,
            Commas(&fk.referred_columns)
        )?;
        if let Some(action) = fk.on_delete {
            write!(f, " ON DELETE {action} ({})", Commas(set_columns))?;
        }
        if let Some(action) = fk.on_update {
            write!(f, " ON UPDATE {action}")?;
        }
        if let Some(characteristics) = &fk.characteristics {
            write!(f, " {characteristics}")?;
        }
        if self.not_valid {
            write!(f, " NOT VALID")?;
        }
        Ok(())
    }
}

struct Commas<'a>(&'a [Ident]);

impl fmt::Display for Commas<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ident) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{ident}")?;
        }
        Ok(())
    }
}

/// The tokens of one statement and its text as written.
struct Fragment {
    tokens: Vec<TokenWithSpan>,
    /// Byte offset of the statement's first token.
    start: usize,
    text: String,
    /// Ended by a semicolon (rather than by the end of the script).
    terminated: bool,
}

/// A script that does not even tokenize.
struct SplitError {
    statement: usize,
    text: String,
    reason: String,
}

/// Splits a script at its top-level semicolons, by tokens, so that a `;` inside a string
/// or a comment does not split. Statements that are only comments are skipped.
fn split_statements(sql: &str) -> Result<Vec<Fragment>, SplitError> {
    let tokenize = |sql: &str| Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location();
    match tokenize(sql) {
        Ok(tokens) => Ok(fragments(sql, tokens)),
        Err(e) => {
            // The statements before the bad token tell which one it is in.
            let at = byte_offset(sql, e.location);
            let before = tokenize(&sql[..at]).map(|t| fragments(&sql[..at], t));
            let (statement, start) = match before.as_deref() {
                Ok(done @ [.., last]) if !last.terminated => (done.len(), last.start),
                Ok(done) => (done.len() + 1, at),
                Err(_) => (1, 0),
            };
            Err(SplitError {
                statement,
                text: sql[start..].to_owned(),
                reason: e.message,
            })
        }
    }
}

fn fragments(sql: &str, tokens: Vec<TokenWithSpan>) -> Vec<Fragment> {
    let mut fragments = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut flush = |current: &mut Vec<TokenWithSpan>, terminated: bool| {
        let tokens = std::mem::take(current);
        let mut meaningful = tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF));
        let Some(first) = meaningful.next() else {
            return;
        };
        let last = meaningful.next_back().unwrap_or(first);
        let start = byte_offset(sql, first.span.start);
        let end = byte_offset(sql, last.span.end).max(start);
        fragments.push(Fragment {
            start,
            text: sql[start..end].to_owned(),
            tokens,
            terminated,
        });
    };
    for token in tokens {
        if token.token == Token::SemiColon {
            flush(&mut current, true);
        } else {
            current.push(token);
        }
    }
    flush(&mut current, false);
    fragments
}

fn parse_statement(
    tokens: Vec<TokenWithSpan>,
) -> Result<Statement, sqlparser::parser::ParserError> {
    let mut parser = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    let statement = parser.parse_statement()?;
    parser.expect_token(&Token::EOF)?;
    Ok(statement)
}

/// The byte offset of a tokenizer location (1-based line, 1-based column in chars).
fn byte_offset(sql: &str, location: Location) -> usize {
    let mut line_start = 0;
    for _ in 1..location.line {
        match sql[line_start..].find('\n') {
            Some(i) => line_start += i + 1,
            None => return sql.len(),
        }
    }
    let line = &sql[line_start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    let column = usize::try_from(location.column.saturating_sub(1)).unwrap_or(usize::MAX);
    line_start
        + line
            .char_indices()
            .nth(column)
            .map_or(line.len(), |(i, _)| i)
}

/// A statement's start for messages: whitespace collapsed, at most 80 characters.
fn excerpt(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= 80 {
        return collapsed;
    }
    let mut short: String = collapsed.chars().take(79).collect();
    short.push('…');
    short
}

/// The start-up audit of a shared store, over `pg_catalog`. `$1` is the schema of the
/// shared tables, `$2` the data role. One row per table of the schema (the migration
/// ledger flagged `is_ledger`), each carrying the role's attributes; a schema without
/// tables gives one row with a NULL `table_name`, so the role is audited still.
pub const AUDIT_SQL: &str = "\
SELECT c.relname::text AS table_name,
       COALESCE(c.relname = '_tenancy_migrations', false) AS is_ledger,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                 AND a.attnum > 0 AND NOT a.attisdropped) AS has_tenant_id,
       COALESCE(c.relrowsecurity, false) AS rls_enabled,
       COALESCE(c.relforcerowsecurity, false) AS rls_forced,
       EXISTS (SELECT 1 FROM pg_policy p
               WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'
                 AND p.polcmd = '*' AND p.polpermissive) AS has_policy,
       EXISTS (SELECT 1 FROM pg_policy p
               WHERE p.polrelid = c.oid AND p.polpermissive
                 AND p.polname <> 'tenant_isolation') AS has_other_policies,
       r.oid IS NOT NULL AS role_exists,
       COALESCE(r.rolsuper, false) AS role_is_superuser,
       COALESCE(r.rolbypassrls, false) AS role_bypasses_rls,
       COALESCE(pg_has_role(r.oid, c.relowner, 'MEMBER'), false) AS role_owns_table
FROM (SELECT $2::text AS rolname) AS wanted
LEFT JOIN pg_roles r ON r.rolname = wanted.rolname
LEFT JOIN (pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace)
       ON n.nspname = $1::text AND c.relkind IN ('r', 'p')
ORDER BY c.relname";

/// One row of [`AUDIT_SQL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRow {
    /// `None`: the schema has no tables.
    pub table_name: Option<String>,
    pub is_ledger: bool,
    pub has_tenant_id: bool,
    pub rls_enabled: bool,
    pub rls_forced: bool,
    pub has_policy: bool,
    pub has_other_policies: bool,
    pub role_exists: bool,
    pub role_is_superuser: bool,
    pub role_bypasses_rls: bool,
    pub role_owns_table: bool,
}

impl TryFrom<&tokio_postgres::Row> for AuditRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &tokio_postgres::Row) -> Result<AuditRow, tokio_postgres::Error> {
        Ok(AuditRow {
            table_name: row.try_get("table_name")?,
            is_ledger: row.try_get("is_ledger")?,
            has_tenant_id: row.try_get("has_tenant_id")?,
            rls_enabled: row.try_get("rls_enabled")?,
            rls_forced: row.try_get("rls_forced")?,
            has_policy: row.try_get("has_policy")?,
            has_other_policies: row.try_get("has_other_policies")?,
            role_exists: row.try_get("role_exists")?,
            role_is_superuser: row.try_get("role_is_superuser")?,
            role_bypasses_rls: row.try_get("role_bypasses_rls")?,
            role_owns_table: row.try_get("role_owns_table")?,
        })
    }
}

/// What is wrong with a shared store, one sentence each; empty when it may serve.
pub fn audit_failures(data_role: &str, rows: &[AuditRow]) -> Vec<String> {
    let mut failures = Vec::new();
    match rows.first() {
        None => failures.push("the audit query returned no rows".to_owned()),
        Some(r) if !r.role_exists => {
            failures.push(format!("the data role {data_role} does not exist"))
        }
        Some(r) => {
            if r.role_is_superuser {
                failures.push(format!("the data role {data_role} is a superuser"));
            }
            if r.role_bypasses_rls {
                failures.push(format!("the data role {data_role} has BYPASSRLS"));
            }
        }
    }
    for row in rows {
        let Some(table) = &row.table_name else {
            continue;
        };
        if row.is_ledger {
            continue;
        }
        let checks = [
            (!row.has_tenant_id, "has no tenant_id column"),
            (!row.rls_enabled, "does not enable row-level security"),
            (!row.rls_forced, "does not force row-level security"),
            (!row.has_policy, "has no tenant_isolation policy"),
            (
                row.has_other_policies,
                "has other permissive policies, which widen what a tenant sees",
            ),
        ];
        for (failed, problem) in checks {
            if failed {
                failures.push(format!("table {table} {problem}"));
            }
        }
        if row.role_owns_table {
            failures.push(format!(
                "the data role {data_role} owns table {table} (or is a member of its owner), \
                 so it could turn row-level security off"
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "NULLIF(current_setting('tenancy.tenant_id', true), '')::UUID";

    fn run(sql: &str) -> Vec<String> {
        SharedTransform::new("app_data")
            .script("0001_test.sql", sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(sql: &str) -> TransformError {
        match SharedTransform::new("app_data").script("0001_test.sql", sql) {
            Ok(out) => panic!("accepted: {out:#?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_guild_schema_is_transformed() {
        let mut transform = SharedTransform::new("app_data");
        let mut all = Vec::new();
        for (file, sql) in crate::migrations::GUILD_MIGRATIONS {
            all.extend(
                transform
                    .script(file, sql)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let tables = ["members", "raids", "items", "auctions", "bids"];
        assert_eq!(all.len(), tables.len() * 5 + 8, "{all:#?}");
        assert_eq!(
            all[0],
            format!(
                "CREATE TABLE members (tenant_id UUID NOT NULL DEFAULT {TENANT}, id TEXT, \
                 name TEXT NOT NULL, class TEXT, dkp INTEGER NOT NULL DEFAULT 0, \
                 joined_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP, \
                 PRIMARY KEY (tenant_id, id), CONSTRAINT members_name_key UNIQUE (tenant_id, name))"
            )
        );
        assert_eq!(
            all[1..5],
            [
                "ALTER TABLE members ENABLE ROW LEVEL SECURITY".to_owned(),
                "ALTER TABLE members FORCE ROW LEVEL SECURITY".to_owned(),
                format!(
                    "CREATE POLICY tenant_isolation ON members USING (tenant_id = {TENANT}) \
                     WITH CHECK (tenant_id = {TENANT})"
                ),
                "GRANT SELECT, INSERT, UPDATE, DELETE ON members TO \"app_data\"".to_owned(),
            ]
        );
        for table in tables {
            for expected in [
                format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
                format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
                format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO \"app_data\""),
            ] {
                assert!(all.contains(&expected), "missing {expected}");
            }
        }
        assert!(all.contains(&"CREATE INDEX members_dkp_idx ON members(tenant_id, dkp)".to_owned()));
        assert!(all.contains(
            &"CREATE INDEX bids_auction_id_amount_idx ON bids(tenant_id, auction_id, amount)"
                .to_owned()
        ));
        let bids = all
            .iter()
            .find(|s| s.starts_with("CREATE TABLE bids"))
            .unwrap();
        assert!(bids.contains(
            "FOREIGN KEY (tenant_id, auction_id) REFERENCES auctions(tenant_id, id) ON DELETE CASCADE"
        ), "{bids}");
        assert!(
            bids.contains("FOREIGN KEY (tenant_id, member_id) REFERENCES members(tenant_id, id)")
        );
        assert!(bids.contains("CONSTRAINT bids_amount_check CHECK (amount > 0)"));
    }

    #[test]
    fn the_current_tenant_expression_prints_as_written() {
        assert_eq!(
            CURRENT_TENANT.to_string(),
            CURRENT_TENANT_SQL.replace("::uuid", "::UUID")
        );
    }

    #[test]
    fn every_output_statement_parses_again() {
        let mut transform = SharedTransform::new("app_data");
        for (file, sql) in crate::migrations::GUILD_MIGRATIONS {
            for statement in transform.script(file, sql).unwrap() {
                // FORCE ROW LEVEL SECURITY is printed by hand and unknown to sqlparser.
                if !statement.ends_with("FORCE ROW LEVEL SECURITY") {
                    Parser::parse_sql(&PostgreSqlDialect {}, &statement)
                        .unwrap_or_else(|e| panic!("{statement}: {e}"));
                }
            }
        }
    }

    #[test]
    fn unnamed_keys_are_named_as_postgresql_names_the_single_tenant_ones() {
        let long = "x".repeat(60);
        let out = run(&format!(
            "CREATE TABLE {long} (id TEXT PRIMARY KEY, email TEXT UNIQUE);\
             CREATE INDEX ON {long} (email);"
        ));
        // PostgreSQL shortens the longer part until the name fits 63 bytes.
        let key = format!("{}_email_key", "x".repeat(53));
        assert!(
            out[0].contains(&format!("CONSTRAINT {key} UNIQUE")),
            "{}",
            out[0]
        );
        assert!(out[0].contains("PRIMARY KEY (tenant_id, id)"), "{}", out[0]);
        let index = format!("{}_email_idx", "x".repeat(53));
        assert!(
            out.iter()
                .any(|s| s.starts_with(&format!("CREATE INDEX {index} ON"))),
            "{out:?}"
        );
        assert_eq!(
            default_name("t", &["a".into(), "b".into()], "fkey"),
            "t_a_b_fkey"
        );
    }

    #[test]
    fn column_keys_become_table_keys_led_by_tenant_id_and_keep_their_names() {
        let out = run("CREATE TABLE a (
            id INTEGER CONSTRAINT a_pk PRIMARY KEY,
            email TEXT CONSTRAINT a_email_key UNIQUE,
            code TEXT UNIQUE,
            b_id INTEGER CONSTRAINT a_b_fk REFERENCES b (id) ON DELETE CASCADE,
            UNIQUE (code, email),
            CONSTRAINT a_pair FOREIGN KEY (b_id, code) REFERENCES b (id, code)
        )");
        assert_eq!(
            out[0],
            format!(
                "CREATE TABLE a (tenant_id UUID NOT NULL DEFAULT {TENANT}, id INTEGER, email TEXT, \
                 code TEXT, b_id INTEGER, CONSTRAINT a_pk PRIMARY KEY (tenant_id, id), \
                 CONSTRAINT a_email_key UNIQUE (tenant_id, email), \
                 CONSTRAINT a_code_key UNIQUE (tenant_id, code), \
                 CONSTRAINT a_code_email_key UNIQUE (tenant_id, code, email), \
                 CONSTRAINT a_b_fk FOREIGN KEY (tenant_id, b_id) REFERENCES b(tenant_id, id) ON DELETE CASCADE, \
                 CONSTRAINT a_pair FOREIGN KEY (tenant_id, b_id, code) REFERENCES b(tenant_id, id, code))"
            )
        );
    }

    #[test]
    fn table_level_primary_keys_are_led_by_tenant_id() {
        let out = run("CREATE TABLE m (a TEXT, b TEXT, CONSTRAINT m_pkey PRIMARY KEY (a, b))");
        assert!(
            out[0].ends_with("b TEXT, CONSTRAINT m_pkey PRIMARY KEY (tenant_id, a, b))"),
            "{}",
            out[0]
        );
    }

    #[test]
    fn references_without_columns_resolve_to_the_primary_key() {
        let mut transform = SharedTransform::new("app_data");
        transform
            .script(
                "0001_a.sql",
                "CREATE TABLE parents (code TEXT, n INTEGER, PRIMARY KEY (code, n));",
            )
            .unwrap();
        let out = transform
            .script(
                "0002_b.sql",
                "CREATE TABLE nodes (
                    id TEXT PRIMARY KEY,
                    parent TEXT REFERENCES nodes,
                    pc TEXT, pn INTEGER,
                    FOREIGN KEY (pc, pn) REFERENCES Parents
                 );",
            )
            .unwrap();
        assert!(
            out[0].contains("FOREIGN KEY (tenant_id, parent) REFERENCES nodes(tenant_id, id)"),
            "{}",
            out[0]
        );
        assert!(
            out[0]
                .contains("FOREIGN KEY (tenant_id, pc, pn) REFERENCES Parents(tenant_id, code, n)"),
            "{}",
            out[0]
        );
    }

    #[test]
    fn references_to_an_unknown_primary_key_are_refused() {
        let e = refused("CREATE TABLE a (id TEXT PRIMARY KEY, b TEXT REFERENCES elsewhere);");
        assert!(
            e.reason.contains("REFERENCES elsewhere names no columns"),
            "{e}"
        );
        assert!(e.reason.contains("REFERENCES elsewhere (id)"), "{e}");
        let e = refused("CREATE TABLE k (x TEXT); CREATE TABLE a (b TEXT REFERENCES k);");
        assert_eq!(e.statement, 2);
        assert!(e.reason.contains("k has no primary key"), "{e}");
    }

    #[test]
    fn on_delete_set_null_sets_only_the_users_columns() {
        let out = run("CREATE TABLE p (id TEXT PRIMARY KEY);
            CREATE TABLE c (id TEXT PRIMARY KEY,
                p_id TEXT CONSTRAINT c_p_fk REFERENCES p (id) ON DELETE SET NULL ON UPDATE CASCADE);");
        assert_eq!(
            out[5],
            format!(
                "CREATE TABLE c (tenant_id UUID NOT NULL DEFAULT {TENANT}, id TEXT, p_id TEXT, \
                 PRIMARY KEY (tenant_id, id))"
            )
        );
        assert_eq!(
            out[6],
            "ALTER TABLE c ADD CONSTRAINT c_p_fk FOREIGN KEY (tenant_id, p_id) REFERENCES p \
             (tenant_id, id) ON DELETE SET NULL (p_id) ON UPDATE CASCADE"
        );
        assert_eq!(out[7], "ALTER TABLE c ENABLE ROW LEVEL SECURITY");
        let out = run("ALTER TABLE c ADD FOREIGN KEY (a, b) REFERENCES p (x, y) ON DELETE SET DEFAULT NOT VALID");
        assert_eq!(
            out,
            [
                "ALTER TABLE c ADD CONSTRAINT c_a_b_fkey FOREIGN KEY (tenant_id, a, b) \
                 REFERENCES p (tenant_id, x, y) \
              ON DELETE SET DEFAULT (a, b) NOT VALID"
            ]
        );
    }

    #[test]
    fn on_update_set_null_is_refused() {
        let e = refused("CREATE TABLE c (p TEXT REFERENCES p (id) ON UPDATE SET NULL)");
        assert!(e.reason.contains("ON UPDATE SET NULL"), "{e}");
    }

    #[test]
    fn serial_columns_become_identity_columns() {
        let out = run("CREATE TABLE s (id BIGSERIAL PRIMARY KEY, n serial, m SMALLSERIAL)");
        assert!(
            out[0].contains(
                "id BIGINT GENERATED BY DEFAULT AS IDENTITY, n INTEGER GENERATED BY DEFAULT AS IDENTITY, \
                 m SMALLINT GENERATED BY DEFAULT AS IDENTITY, PRIMARY KEY (tenant_id, id)"
            ),
            "{}",
            out[0]
        );
        let out = run("CREATE TABLE i (id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY)");
        assert!(
            out[0].contains("id INTEGER GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (tenant_id, id)")
        );
    }

    #[test]
    fn indexes_are_led_by_tenant_id() {
        let out = run(
            "CREATE UNIQUE INDEX u ON t (lower(email), b DESC) WHERE b > 0;
            CREATE INDEX IF NOT EXISTS i ON t USING btree (a);
            CREATE INDEX g ON t USING gin (tags);",
        );
        assert_eq!(
            out,
            [
                "CREATE UNIQUE INDEX u ON t(tenant_id, lower(email), b DESC) WHERE b > 0",
                "CREATE INDEX IF NOT EXISTS i ON t USING BTREE (tenant_id, a)",
                "CREATE INDEX g ON t USING GIN (tags)",
            ]
        );
        let e = refused("CREATE UNIQUE INDEX h ON t USING hash (a)");
        assert!(e.reason.contains("B-tree"), "{e}");
    }

    #[test]
    fn alter_table_keeps_plain_changes_and_rewrites_keys() {
        let out = run("ALTER TABLE t ADD COLUMN note TEXT NOT NULL DEFAULT '';
            ALTER TABLE t ADD COLUMN email TEXT CONSTRAINT t_email_key UNIQUE, ADD COLUMN o_id TEXT REFERENCES o (id);
            ALTER TABLE t ADD CONSTRAINT t_pair UNIQUE (a, b);
            ALTER TABLE t ADD PRIMARY KEY (id);
            ALTER TABLE t ADD CONSTRAINT t_o FOREIGN KEY (o_id) REFERENCES o (id) ON DELETE CASCADE;
            ALTER TABLE t ADD CONSTRAINT t_pos CHECK (n > 0);
            ALTER TABLE t RENAME COLUMN a TO z;
            ALTER TABLE t RENAME TO u;
            ALTER TABLE u DROP COLUMN note, ALTER COLUMN z SET NOT NULL;
            ALTER INDEX i RENAME TO j;
            DROP INDEX j;
            DROP TABLE u;");
        assert_eq!(
            out,
            [
                "ALTER TABLE t ADD COLUMN note TEXT NOT NULL DEFAULT ''",
                "ALTER TABLE t ADD COLUMN email TEXT, ADD CONSTRAINT t_email_key UNIQUE (tenant_id, email), \
                 ADD COLUMN o_id TEXT, ADD CONSTRAINT t_o_id_fkey FOREIGN KEY (tenant_id, o_id) REFERENCES o(tenant_id, id)",
                "ALTER TABLE t ADD CONSTRAINT t_pair UNIQUE (tenant_id, a, b)",
                "ALTER TABLE t ADD PRIMARY KEY (tenant_id, id)",
                "ALTER TABLE t ADD CONSTRAINT t_o FOREIGN KEY (tenant_id, o_id) REFERENCES o(tenant_id, id) ON DELETE CASCADE",
                "ALTER TABLE t ADD CONSTRAINT t_pos CHECK (n > 0)",
                "ALTER TABLE t RENAME COLUMN a TO z",
                "ALTER TABLE t RENAME TO u",
                "ALTER TABLE u DROP COLUMN note, ALTER COLUMN z SET NOT NULL",
                "ALTER INDEX i RENAME TO j",
                "DROP INDEX j",
                "DROP TABLE u",
            ]
        );
    }

    #[test]
    fn renames_and_added_keys_are_followed_for_references() {
        let mut transform = SharedTransform::new("app_data");
        transform
            .script(
                "0001_a.sql",
                "CREATE TABLE a (x TEXT); ALTER TABLE a ADD PRIMARY KEY (x); \
                 ALTER TABLE a RENAME COLUMN x TO y; ALTER TABLE a RENAME TO b;",
            )
            .unwrap();
        let out = transform
            .script("0002_c.sql", "CREATE TABLE c (b_y TEXT REFERENCES b)")
            .unwrap();
        assert!(out[0].contains("REFERENCES b(tenant_id, y)"), "{}", out[0]);
        let e = transform
            .script(
                "0003_d.sql",
                "DROP TABLE b; CREATE TABLE d (b_y TEXT REFERENCES b)",
            )
            .unwrap_err();
        assert_eq!(e.statement, 2);
    }

    #[test]
    fn a_tenant_id_column_of_the_users_is_refused() {
        for sql in [
            "CREATE TABLE t (id TEXT, tenant_id UUID)",
            "CREATE TABLE t (id TEXT, TENANT_ID UUID)",
            "ALTER TABLE t ADD COLUMN tenant_id TEXT",
            "ALTER TABLE t DROP COLUMN tenant_id",
            "ALTER TABLE t RENAME COLUMN x TO tenant_id",
            "ALTER TABLE t ALTER COLUMN tenant_id DROP NOT NULL",
        ] {
            let e = refused(sql);
            assert!(
                e.reason.contains("tenant_id") || e.reason.contains("TENANT_ID"),
                "{sql}: {e}"
            );
        }
        // A quoted name of another case is another column in PostgreSQL.
        run("CREATE TABLE t (\"Tenant_Id\" TEXT)");
    }

    #[test]
    fn statements_that_cannot_be_made_safe_are_refused() {
        for (sql, why) in [
            ("INSERT INTO t (a) VALUES (1)", "data statements"),
            ("UPDATE t SET a = 1", "data statements"),
            ("DELETE FROM t", "data statements"),
            ("SELECT 1", "data statements"),
            ("CREATE VIEW v AS SELECT * FROM t", "views"),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
                "functions",
            ),
            (
                "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
                "triggers",
            ),
            ("CREATE POLICY p ON t USING (true)", "policies"),
            ("GRANT SELECT ON t TO someone", "privileges"),
            ("ALTER TABLE t DISABLE ROW LEVEL SECURITY", "isolation"),
            ("ALTER TABLE t OWNER TO someone", "not supported"),
            ("CREATE SEQUENCE s", "IDENTITY"),
            ("DROP VIEW v", "DROP VIEW"),
            ("CREATE TEMPORARY TABLE t (a TEXT)", "temporary"),
            ("CREATE TABLE t AS SELECT 1 AS a", "AS"),
            ("CREATE SCHEMA s", "not supported"),
            ("SET search_path TO other", "not supported"),
            ("BEGIN", "not supported"),
        ] {
            let e = refused(sql);
            assert!(e.reason.contains(why), "{sql}: {e}");
            assert_eq!(e.statement, 1, "{sql}");
        }
    }

    #[test]
    fn the_error_names_the_file_the_statement_and_its_start() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (id TEXT PRIMARY KEY);\n\
                   INSERT INTO a (id) VALUES ('x;y');\n\n\
                   CREATE   VIEW   everything_there_is_to_see_in_this_table_and_more_columns AS \
                   SELECT id, id AS id2, id AS id3, id AS id4 FROM a;";
        let mut transform = SharedTransform::new("app_data");
        let e = transform.script("0002_x.sql", sql).unwrap_err();
        assert_eq!(e.statement, 2);
        assert_eq!(e.excerpt, "INSERT INTO a (id) VALUES ('x;y')");
        let e = transform
            .script(
                "0002_x.sql",
                &sql.replace("INSERT INTO a (id) VALUES ('x;y');", ""),
            )
            .unwrap_err();
        assert_eq!(e.statement, 2);
        assert_eq!(e.excerpt.chars().count(), 80);
        assert!(
            e.excerpt.starts_with("CREATE VIEW everything_there_is"),
            "{}",
            e.excerpt
        );
        assert!(e.excerpt.ends_with('…'));
        assert_eq!(
            e.to_string(),
            format!(
                "file 0002_x.sql, statement 2 (`{}`): views are not supported in shared mode: \
                 a view reads with its owner's rights and would bypass row-level security",
                e.excerpt
            )
        );
        // Refused as a whole: the table of statement 1 was not remembered.
        let e = transform
            .script("0003_y.sql", "CREATE TABLE b (a_id TEXT REFERENCES a)")
            .unwrap_err();
        assert!(
            e.reason.contains("not created by an earlier statement"),
            "{e}"
        );
    }

    #[test]
    fn parse_errors_name_the_statement() {
        let e = refused(
            "CREATE TABLE a (id TEXT);\nCREATE TABLE b (id TEXT,,);\nCREATE TABLE c (x TEXT);",
        );
        assert_eq!(e.statement, 2);
        assert_eq!(e.excerpt, "CREATE TABLE b (id TEXT,,)");
        assert!(e.reason.starts_with("cannot parse it"), "{e}");
        let e = refused("CREATE TABLE a (id TEXT);\nCREATE TABLE b (id TEXT DEFAULT 'oops);");
        assert_eq!(e.statement, 2);
        assert!(e.excerpt.starts_with("CREATE TABLE b"), "{e}");
        let e = refused("CREATE TABLE a (id TEXT);\n'unterminated");
        assert_eq!(e.statement, 2);
        assert_eq!(e.excerpt, "'unterminated");
    }

    #[test]
    fn a_script_of_comments_gives_nothing() {
        assert!(run("-- nothing yet\n/* still nothing; */\n;;").is_empty());
    }

    #[test]
    fn the_data_role_is_quoted_as_an_identifier() {
        let out = SharedTransform::new("we\"ird role")
            .script("0001_a.sql", "CREATE TABLE a (id TEXT)")
            .unwrap();
        assert_eq!(
            out[4],
            "GRANT SELECT, INSERT, UPDATE, DELETE ON a TO \"we\"\"ird role\""
        );
    }

    #[test]
    fn quoted_and_qualified_names_are_kept() {
        let out = run("CREATE TABLE app.\"Order Lines\" (\"Id\" TEXT PRIMARY KEY)");
        assert!(out[0].starts_with("CREATE TABLE app.\"Order Lines\" (tenant_id UUID"));
        assert!(
            out[0].ends_with("PRIMARY KEY (tenant_id, \"Id\"))"),
            "{}",
            out[0]
        );
        assert_eq!(
            out[2],
            "ALTER TABLE app.\"Order Lines\" FORCE ROW LEVEL SECURITY"
        );
        // Internal tables are isolated all the same.
        let out = run("CREATE TABLE _cache (k TEXT PRIMARY KEY)");
        assert_eq!(out.len(), 5);
        assert_eq!(out[2], "ALTER TABLE _cache FORCE ROW LEVEL SECURITY");
    }

    #[test]
    fn audit_passes_a_clean_store_and_names_what_fails() {
        let good = AuditRow {
            table_name: Some("members".into()),
            has_tenant_id: true,
            rls_enabled: true,
            rls_forced: true,
            has_policy: true,
            role_exists: true,
            ..AuditRow::default()
        };
        let ledger = AuditRow {
            table_name: Some("_tenancy_migrations".into()),
            is_ledger: true,
            role_exists: true,
            ..AuditRow::default()
        };
        assert!(audit_failures("d", &[ledger.clone(), good.clone()]).is_empty());
        let empty = AuditRow {
            role_exists: true,
            ..AuditRow::default()
        };
        assert!(audit_failures("d", &[empty]).is_empty());
        let bad = AuditRow {
            table_name: Some("notes".into()),
            role_exists: true,
            has_other_policies: true,
            role_owns_table: true,
            ..AuditRow::default()
        };
        let failures = audit_failures("d", &[good.clone(), bad]);
        assert_eq!(failures.len(), 6, "{failures:#?}");
        assert!(
            failures.iter().all(|f| f.contains("notes")),
            "{failures:#?}"
        );
        let superuser = AuditRow {
            role_is_superuser: true,
            role_bypasses_rls: true,
            ..good
        };
        assert_eq!(
            audit_failures("d", &[superuser]),
            [
                "the data role d is a superuser",
                "the data role d has BYPASSRLS"
            ]
        );
        assert_eq!(
            audit_failures("d", &[AuditRow::default()]),
            ["the data role d does not exist"]
        );
        assert!(AUDIT_SQL.contains("'_tenancy_migrations'"));
        assert!(AUDIT_SQL.contains(&format!("'{POLICY_NAME}'")));
    }

    #[test]
    fn shared_scripts_transforms_a_whole_set() {
        let set = crate::migrations::MigrationSet::builtin_guild();
        let scripts = set.scripts(crate::migrations::Dialect::Postgres).unwrap();
        let out = shared_scripts("app_data", &scripts).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 18);
    }
}
