// The stage catalog's logic, apart from its components (catalog.jsx): the input as
// typed, the examples a saga's schema declares, the stages a dry run can force to fail,
// and a stage's outcome in a rehearsal as people say it.

// A value as one line of JSON ('' for none: the key is absent).
export function shown(value) {
  return value === undefined ? '' : JSON.stringify(value);
}

// { value } for JSON text, or { problem } saying why it is not JSON.
export function parsed(text) {
  try {
    return { value: JSON.parse(text) };
  } catch (err) {
    return { problem: `the input is not JSON: ${err.message}` };
  }
}

// The examples of the saga's input its schema declares (JSON Schema's `examples`).
export function examplesOf(schema) {
  return schema && Array.isArray(schema.examples) ? schema.examples : [];
}

// The stages a dry run can force to fail: those with a transaction (a composite fails
// through its children).
export function forcible(stages) {
  return stages.filter((s) => s.kind === 'Stage');
}

// `chosen` with `path` checked or not, in the order the paths were chosen.
export function choose(chosen, path, on) {
  const rest = chosen.filter((p) => p !== path);
  return on ? [...rest, path] : rest;
}

// A stage's outcome in a rehearsal: its status, and whether `fail` made it fail.
export function outcome(stage) {
  if (stage.status === 'failed' && stage.forced) return 'failed (forced)';
  return stage.status;
}

// The schema the start form is built from: the saga's, without a `$schema` naming its
// draft. The form's ajv reads draft-07 and would refuse a schema that names 2020-12 (the
// draft the server checks with); the keywords of both it reads alike, and the server
// checks the input again with the saga's own draft.
export function formSchema(schema) {
  if (!schema || typeof schema !== 'object' || !('$schema' in schema)) return schema;
  const { $schema: _draft, ...rest } = schema;
  return rest;
}
