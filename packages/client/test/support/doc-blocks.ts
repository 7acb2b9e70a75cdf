/**
 * Keeps documentation examples honest: extracts the fenced code blocks of a Markdown file and
 * type-checks each one as its own module with the TypeScript compiler, resolving imports the way
 * an application in this repository would (the packages' built declarations).
 */
import { dirname, join, resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');

export interface CodeBlock {
  lang: string;
  code: string;
  /** 1-based line of the first code line in the Markdown file. */
  line: number;
}

export function readDoc(relativePath: string): string {
  return readFileSync(join(REPO_ROOT, relativePath), 'utf8');
}

export function codeBlocks(markdown: string, langs: readonly string[]): CodeBlock[] {
  const blocks: CodeBlock[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const open = /^```(\w+)\s*$/.exec(lines[i]);
    if (!open) continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !lines[end].startsWith('```')) end += 1;
    if (langs.includes(open[1])) blocks.push({ lang: open[1], code: lines.slice(start, end).join('\n'), line: start + 1 });
    i = end;
  }
  return blocks;
}

const COMPILER_OPTIONS: ts.CompilerOptions = {
  strict: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  moduleDetection: ts.ModuleDetectionKind.Force,
  jsx: ts.JsxEmit.ReactJSX,
  lib: ['lib.es2023.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
  types: ['node'],
  verbatimModuleSyntax: true,
  skipLibCheck: true,
  noEmit: true,
};

/**
 * Type errors of the blocks, as readable lines (`docs/x.md:LINE: message`); empty when all pass.
 * Each block is placed next to the document, so `@presence/*` resolves through the workspace.
 */
export function typeErrors(docRelativePath: string, blocks: CodeBlock[]): string[] {
  const docPath = join(REPO_ROOT, docRelativePath);
  const virtual = new Map<string, CodeBlock>();
  blocks.forEach((block, index) => {
    const extension = block.lang === 'tsx' ? 'tsx' : 'ts';
    virtual.set(join(dirname(docPath), `__doc_block_${index}.${extension}`), block);
  });
  const host = ts.createCompilerHost(COMPILER_OPTIONS);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const readFile = host.readFile.bind(host);
  host.getSourceFile = (fileName, languageVersion, onError, shouldCreate) => {
    const block = virtual.get(fileName);
    return block ? ts.createSourceFile(fileName, block.code, languageVersion, true) : getSourceFile(fileName, languageVersion, onError, shouldCreate);
  };
  host.fileExists = (fileName) => virtual.has(fileName) || fileExists(fileName);
  host.readFile = (fileName) => virtual.get(fileName)?.code ?? readFile(fileName);
  const program = ts.createProgram([...virtual.keys()], COMPILER_OPTIONS, host);
  const errors: string[] = [];
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const file = diagnostic.file;
    const block = file ? virtual.get(file.fileName) : undefined;
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    if (!file || !block) {
      errors.push(`${docRelativePath}: ${message}`);
      continue;
    }
    const { line } = file.getLineAndCharacterOfPosition(diagnostic.start ?? 0);
    errors.push(`${docRelativePath}:${block.line + line}: ${message}`);
  }
  return errors;
}

/** Property names of an exported interface (inherited ones included), read from a source file. */
export function interfaceMembers(sourceRelativePath: string, interfaceName: string): string[] {
  const fileName = join(REPO_ROOT, sourceRelativePath);
  const program = ts.createProgram([fileName], { ...COMPILER_OPTIONS, types: [] });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(fileName);
  if (!source) throw new Error(`cannot read ${sourceRelativePath}`);
  let found: ts.InterfaceDeclaration | undefined;
  source.forEachChild((node) => {
    if (ts.isInterfaceDeclaration(node) && node.name.text === interfaceName) found = node;
  });
  if (!found) throw new Error(`${sourceRelativePath} has no interface ${interfaceName}`);
  return checker.getPropertiesOfType(checker.getTypeAtLocation(found)).map((symbol) => symbol.name);
}

/**
 * Turns a TypeScript module into the body of an async function: types are stripped and
 * `import … from 'x'` lines become reads from `modules['x']`, so a test can run an example with
 * the modules it chooses.
 */
export function runnableBody(code: string): string {
  const js = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true } }).outputText;
  return js
    .split('\n')
    .map((line) => {
      const named = /^import \{([^}]+)\} from '([^']+)';$/.exec(line);
      if (named) return `const {${named[1]}} = modules[${JSON.stringify(named[2])}];`;
      const defaulted = /^import (\w+) from '([^']+)';$/.exec(line);
      if (defaulted) return `const ${defaulted[1]} = modules[${JSON.stringify(defaulted[2])}].default;`;
      if (line.startsWith('import ')) throw new Error(`unsupported import in a runnable example: ${line}`);
      return line;
    })
    .join('\n');
}
