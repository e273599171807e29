import { describe, expect, it } from 'vitest';
import { choose, examplesOf, forcible, formSchema, outcome, parsed, shown } from './catalogview.js';

describe('the stage catalog', () => {
  it('reads the input typed as JSON or says why it is none', () => {
    expect(parsed('{"items": []}')).toEqual({ value: { items: [] } });
    expect(parsed('null')).toEqual({ value: null });
    expect(parsed('{not json').problem).toMatch(/^the input is not JSON: /);
  });

  it('shows a value as JSON, nothing for an absent one', () => {
    expect(shown({ a: [1] })).toBe('{"a":[1]}');
    expect(shown(null)).toBe('null');
    expect(shown(undefined)).toBe('');
  });

  it('takes the examples a schema declares', () => {
    expect(examplesOf({ examples: [{ items: [] }, 2] })).toEqual([{ items: [] }, 2]);
    expect(examplesOf({ examples: 'one' })).toEqual([]);
    expect(examplesOf(null)).toEqual([]);
  });

  it('offers to force to fail the stages with a transaction only', () => {
    const stages = [{ path: '', kind: 'Saga' }, { path: 'pay', kind: 'Parallel' },
      { path: 'pay/charge', kind: 'Stage' }, { path: 'pack[*]/box', kind: 'Stage' }];
    expect(forcible(stages).map((s) => s.path)).toEqual(['pay/charge', 'pack[*]/box']);
  });

  it('keeps the stages chosen once each', () => {
    let chosen = choose([], 'pay/charge', true);
    chosen = choose(chosen, 'ship', true);
    expect(choose(chosen, 'pay/charge', true)).toEqual(['ship', 'pay/charge']);
    expect(choose(chosen, 'pay/charge', false)).toEqual(['ship']);
  });

  it('says a stage failed because it was forced to', () => {
    expect(outcome({ status: 'failed', forced: true })).toBe('failed (forced)');
    expect(outcome({ status: 'failed', forced: false })).toBe('failed');
    expect(outcome({ status: 'compensated', forced: false })).toBe('compensated');
  });

  it('builds the form from the schema without the draft it names', () => {
    const schema = { $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object' };
    expect(formSchema(schema)).toEqual({ type: 'object' });
    expect(schema.$schema).toBeDefined(); // the saga's own schema is left as it is
    const plain = { type: 'integer' };
    expect(formSchema(plain)).toBe(plain);
    expect(formSchema(null)).toBe(null);
  });
});
