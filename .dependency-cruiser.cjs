// Import rules for src/, checked by `npm run lint` (dependency-cruiser):
// - no import cycles, type-only imports included (a cycle through `import type` is still a
//   cycle of knowledge between two modules);
// - imports only point down the layers of docs' architecture.md, or stay in their own folder.
// test/unit/import-rules.test.ts proves each rule fails on a fixture that breaks it.

/** Folders of src/, top to bottom. A folder may import its own files and any lower layer's. */
const LAYERS = [
  ['cli'], // the command line: \`embers serve\` starts the API server, \`embers fn\` calls it
  ['api'],
  ['node'],
  ['snapshot', 'memory', 'examples'],
  ['vmm'],
  ['net', 'disk', 'image'],
  ['guest', 'native'],
  ['util'],
  ['config.ts'], // reads the environment: nothing else in src/ does (scripts/check-env-reads.mjs)
  ['errors.ts'],
  ['error-details.ts'], // the types of each code's details
  ['error-catalogue'], // the catalogue's entries and details, one file per area
];

const pathOf = (name) => (name.endsWith('.ts') ? `^src/${name.replace('.', '\\.')}$` : `^src/${name}/`);

const layerRules = LAYERS.flatMap((layer, rank) =>
  layer.flatMap((name) => {
    const notBelow = LAYERS.slice(0, rank + 1)
      .flat()
      .filter((other) => other !== name);
    if (notBelow.length === 0) return []; // alone at the top: it may import every layer below
    return [
      {
        name: `layers-${name.replace('.ts', '')}`,
        comment: `${name} sits above ${
          LAYERS.slice(rank + 1)
            .flat()
            .join(', ') || 'nothing'
        }: it may not import ${notBelow.join(', ')}`,
        severity: 'error',
        from: { path: pathOf(name) },
        to: { path: notBelow.map(pathOf) },
      },
    ];
  }),
);

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'a module must not depend on itself through others: split out what both need',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...layerRules,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    // count `import type` too
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
