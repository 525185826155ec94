import { describe, expect, it } from 'vitest';
import { FormatError } from './errors';
import { JsonSyntaxError, parseJson, pyFloat, pythonFloatRepr, pythonJsonDumps } from './json';

// Expected strings below were produced by CPython 3 `json.dumps` / `repr` and pasted verbatim.
// Python floats with integral values are written with pyFloat() since JS cannot tell 2 from 2.0.
const value = () => ({
  a: 'h\u00e9llo \u2603 \u{1F600} \x7f \x00 \x1f "q" \\ /',
  nested: {
    list: [1, 2.5, pyFloat(-0), 1e-5, pyFloat(1e16), pyFloat(1.5e300), 123456789.125, 0.1, 1e-7, pyFloat(12345678901234568)],
    empty_obj: {},
    empty_list: [],
    t: true,
    f: false,
    n: null,
  },
  x: [[], {}, [[]]],
  nan: NaN,
  inf: Infinity,
  ninf: -Infinity,
});

const PY_COMPACT =
  '{"a": "h\\u00e9llo \\u2603 \\ud83d\\ude00 \\u007f \\u0000 \\u001f \\"q\\" \\\\ /", "nested": {"list": [1, 2.5, -0.0, 1e-05, 1e+16, 1.5e+300, 123456789.125, 0.1, 1e-07, 1.2345678901234568e+16], "empty_obj": {}, "empty_list": [], "t": true, "f": false, "n": null}, "x": [[], {}, [[]]], "nan": NaN, "inf": Infinity, "ninf": -Infinity}';
const PY_INDENT2 =
  '{\n  "a": "h\\u00e9llo \\u2603 \\ud83d\\ude00 \\u007f \\u0000 \\u001f \\"q\\" \\\\ /",\n  "nested": {\n    "list": [\n      1,\n      2.5,\n      -0.0,\n      1e-05,\n      1e+16,\n      1.5e+300,\n      123456789.125,\n      0.1,\n      1e-07,\n      1.2345678901234568e+16\n    ],\n    "empty_obj": {},\n    "empty_list": [],\n    "t": true,\n    "f": false,\n    "n": null\n  },\n  "x": [\n    [],\n    {},\n    [\n      []\n    ]\n  ],\n  "nan": NaN,\n  "inf": Infinity,\n  "ninf": -Infinity\n}';
const PY_INDENT0 =
  '{\n"a": "h\\u00e9llo \\u2603 \\ud83d\\ude00 \\u007f \\u0000 \\u001f \\"q\\" \\\\ /",\n"nested": {\n"list": [\n1,\n2.5,\n-0.0,\n1e-05,\n1e+16,\n1.5e+300,\n123456789.125,\n0.1,\n1e-07,\n1.2345678901234568e+16\n],\n"empty_obj": {},\n"empty_list": [],\n"t": true,\n"f": false,\n"n": null\n},\n"x": [\n[],\n{},\n[\n[]\n]\n],\n"nan": NaN,\n"inf": Infinity,\n"ninf": -Infinity\n}';

describe('pythonJsonDumps', () => {
  it('matches json.dumps(v) byte for byte (non-ASCII, escapes, nesting, numbers, NaN)', () => {
    expect(pythonJsonDumps(value())).toBe(PY_COMPACT);
  });

  it('matches json.dumps(v, indent=2) and indent=0', () => {
    expect(pythonJsonDumps(value(), 2)).toBe(PY_INDENT2);
    expect(pythonJsonDumps(value(), 0)).toBe(PY_INDENT0);
  });

  it('prints empty containers as {} and [] at any indent', () => {
    expect(pythonJsonDumps([])).toBe('[]');
    expect(pythonJsonDumps({})).toBe('{}');
    expect(pythonJsonDumps([], 2)).toBe('[]');
    expect(pythonJsonDumps({ a: [] }, 4)).toBe('{\n    "a": []\n}');
  });

  it('writes the index JSON msModelSlim writes (json.dump(indent=2))', () => {
    const v = { metadata: { total_size: 123 }, weight_map: { b: 'x-00001-of-00002.safetensors', a: 'x-00002-of-00002.safetensors' } };
    expect(pythonJsonDumps(v, 2)).toBe(
      '{\n  "metadata": {\n    "total_size": 123\n  },\n  "weight_map": {\n    "b": "x-00001-of-00002.safetensors",\n    "a": "x-00002-of-00002.safetensors"\n  }\n}',
    );
  });

  it('keeps Map insertion order even for index-like keys (plain objects would reorder them)', () => {
    expect(pythonJsonDumps(new Map<unknown, unknown>([['b', 1], ['10', 2], ['2', 3]]))).toBe('{"b": 1, "10": 2, "2": 3}');
    expect(pythonJsonDumps({ b: 1, 10: 2, 2: 3 })).toBe('{"2": 3, "10": 2, "b": 1}');
    // Python turns non-string keys into strings.
    expect(pythonJsonDumps(new Map<unknown, unknown>([[1, 'x'], [true, 'y'], [null, 'z'], [0.5, 'w']]))).toBe('{"1": "x", "true": "y", "null": "z", "0.5": "w"}');
  });

  it('prints integral numbers as ints with exact digits and bigint as is', () => {
    expect(pythonJsonDumps([0, -0, 2 ** 53, 1e21, 12n])).toBe('[0, 0, 9007199254740992, 1000000000000000000000, 12]');
    expect(pythonJsonDumps(pyFloat(500000))).toBe('500000.0');
  });

  it('rejects what Python cannot serialize', () => {
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as FormatError).code;
      }
      return 'no error';
    };
    expect(code(() => pythonJsonDumps({ a: undefined }))).toBe('E_JSON_TYPE');
    expect(code(() => pythonJsonDumps([() => 1]))).toBe('E_JSON_TYPE');
    expect(code(() => pythonJsonDumps(new Date(0)))).toBe('E_JSON_TYPE');
    const loop: Record<string, unknown> = { k: 1 };
    loop.self = loop;
    expect(code(() => pythonJsonDumps(loop))).toBe('E_JSON_CIRCULAR');
    // The same (acyclic) object twice is fine, as in Python.
    const shared = { z: 1 };
    expect(pythonJsonDumps([shared, shared])).toBe('[{"z": 1}, {"z": 1}]');
  });
});

describe('pythonFloatRepr', () => {
  it('matches CPython repr(float)', () => {
    const cases: [number, string][] = [
      [0.1, '0.1'],
      [1 / 3, '0.3333333333333333'],
      [2 / 3, '0.6666666666666666'],
      [5e-324, '5e-324'],
      [1.7976931348623157e308, '1.7976931348623157e+308'],
      [1e15, '1000000000000000.0'],
      [1e16, '1e+16'],
      [123e-20, '1.23e-18'],
      [0.0001, '0.0001'],
      [0.00001, '1e-05'],
      [100.5, '100.5'],
      [-2.5e-5, '-2.5e-05'],
      [2 ** 53 + 1, '9007199254740992.0'],
      [-0, '-0.0'],
      [1e-5, '1e-05'],
    ];
    for (const [x, py] of cases) expect(pythonFloatRepr(x), String(x)).toBe(py);
  });
});

describe('parseJson', () => {
  it('parses like JSON.parse and keeps Map order / last duplicate in first position like a Python dict', () => {
    const text = '{"b": [1, 2.5e3, "\\u00e9\\n"], "10": null, "a": {"x": true}}';
    expect(parseJson(text, 'f.json')).toEqual(JSON.parse(text));
    const m = parseJson(text, 'f.json', { maps: true }) as Map<string, unknown>;
    expect([...m.keys()]).toEqual(['b', '10', 'a']);
    expect(m.get('a')).toBeInstanceOf(Map);
    const dup = parseJson('{"a": 1, "b": 2, "a": 3}', 'f.json', { maps: true }) as Map<string, unknown>;
    expect([...dup.entries()]).toEqual([['a', 3], ['b', 2]]);
  });

  it('reports line and column of a syntax error', () => {
    try {
      parseJson('{\n  "a": 1,\n  "b" 2\n}', '/x/config.json', { code: 'E_CONFIG_JSON' });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(JsonSyntaxError);
      const err = e as JsonSyntaxError;
      expect(err.code).toBe('E_CONFIG_JSON');
      expect([err.line, err.column]).toEqual([3, 7]);
      expect(err.message).toContain('/x/config.json:3:7');
    }
  });

  it('rejects duplicates on request, trailing commas, comments and trailing garbage', () => {
    const codeOf = (t: string, dup?: 'error') => {
      try {
        parseJson(t, 'f', { duplicateKeys: dup });
        return 'ok';
      } catch (e) {
        return `${(e as JsonSyntaxError).code}@${(e as JsonSyntaxError).line}:${(e as JsonSyntaxError).column}`;
      }
    };
    expect(codeOf('{"a": 1, "a": 2}', 'error')).toBe('E_JSON@1:10');
    expect(codeOf('[1, 2,]')).toBe('E_JSON@1:7');
    expect(codeOf('{"a": 1} // c')).toBe('E_JSON@1:10');
    expect(codeOf('{"a": 01}')).toBe('E_JSON@1:8');
    expect(codeOf('"\t"')).toBe('E_JSON@1:2');
    expect(codeOf('[NaN, -Infinity]')).toBe('ok');
  });

  it('does not let a "__proto__" key touch the prototype', () => {
    const o = parseJson('{"__proto__": {"polluted": 1}}', 'f') as Record<string, unknown>;
    expect(Object.keys(o)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(o)).toBe(Object.prototype);
  });
});
