/**
 * Registry image references, as Docker and the OCI distribution spec write them:
 *
 *   [REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:HEX]      (a leading `docker://` is accepted)
 *
 * The first path component is a registry when it contains a `.` or a `:`, is `localhost`, or
 * has an uppercase letter; otherwise the registry is `docker.io`, and a one-component Docker
 * Hub repository gets `library/` (`alpine` → `docker.io/library/alpine:latest`). Without tag
 * and digest the tag is `latest`; with a digest the digest alone selects the image (a tag
 * beside it is kept for display only). Repositories are lowercase.
 */
import { EmbersError, type ErrorDetails } from '../../errors.js';

export interface ImageReference {
  /** Registry as named: `docker.io`, `ghcr.io`, `localhost:5000`, `[::1]:5000`. */
  registry: string;
  /** Repository path on the registry: `library/alpine`, `acme/fn`. */
  repository: string;
  /** The tag, when the reference has one (`latest` is implied when there is no digest either). */
  tag?: string;
  /** `sha256:<64 hex>`, when the reference pins a manifest or index. */
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
/** Where the Docker Hub registry API really lives. */
export const DOCKER_HUB_ENDPOINT = 'registry-1.docker.io';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const OTHER_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const MAX_NAME = 255;

type ReferenceProblem = Omit<ErrorDetails<'EMB_IMAGE_REFERENCE_INVALID'>, 'reference'>;

function invalid(reference: string, problem: ReferenceProblem): EmbersError {
  return EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference, ...problem });
}

function validRegistry(registry: string): boolean {
  let host = registry;
  let port: string | undefined;
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(registry);
  if (v6) {
    port = v6[2];
  } else {
    const colon = registry.lastIndexOf(':');
    if (colon !== -1) {
      host = registry.slice(0, colon);
      port = registry.slice(colon + 1);
      if (!/^\d+$/.test(port)) return false;
    }
    if (!host.split('.').every((c) => DOMAIN_COMPONENT.test(c))) return false;
  }
  return port === undefined || (Number(port) > 0 && Number(port) < 65536);
}

/** Parses a registry reference; throws EMB_IMAGE_REFERENCE_INVALID with the reason. */
export function parseImageReference(input: string): ImageReference {
  const ref = input.startsWith('docker://') ? input.slice('docker://'.length) : input;
  if (ref === '') throw invalid(input, { problem: 'empty' });
  if (/\s/.test(ref)) throw invalid(input, { problem: 'white-space' });

  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) {
      if (OTHER_DIGEST.test(digest) && !digest.startsWith('sha256:'))
        throw invalid(input, { problem: 'digest-algorithm', digest });
      throw invalid(input, { problem: 'digest', digest });
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(input, { problem: 'tag', tag });
  }
  if (rest === '') throw invalid(input, { problem: 'no-repository' });

  let registry: string;
  let repository: string;
  const slash = rest.indexOf('/');
  const first = slash === -1 ? '' : rest.slice(0, slash);
  if (slash === -1 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    registry = DOCKER_HUB;
    repository = rest;
  } else {
    registry = first;
    repository = rest.slice(slash + 1);
    if (!validRegistry(registry)) throw invalid(input, { problem: 'registry', registry });
  }
  registry = canonicalRegistry(registry);
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (repository === '') throw invalid(input, { problem: 'no-repository' });
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      throw invalid(input, { problem: 'component', component });
    }
  }
  if (registry.length + 1 + repository.length > MAX_NAME)
    throw invalid(input, { problem: 'too-long', maxLength: MAX_NAME });
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** Docker Hub's other names (`index.docker.io`, `registry-1.docker.io`) as `docker.io`; any other registry as it is. */
export function canonicalRegistry(registry: string): string {
  return registry === 'index.docker.io' || registry === DOCKER_HUB_ENDPOINT ? DOCKER_HUB : registry;
}

/** The canonical text of a reference: `registry/repository[:tag][@digest]`. */
export function formatImageReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

/** The reference with its tag replaced by a digest: what a pull resolved the tag to. */
export function pinnedReference(r: ImageReference, digest: string): string {
  return `${r.registry}/${r.repository}@${digest}`;
}

/** The host[:port] the registry API is served on (Docker Hub's API is not on docker.io). */
export function registryEndpoint(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : registry;
}

/** Host name (IPv6 without brackets) and port of a registry. */
export function splitHostPort(registry: string): { hostname: string; port?: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(registry);
  if (v6) return { hostname: v6[1]!, ...(v6[2] ? { port: Number(v6[2]) } : {}) };
  const colon = registry.lastIndexOf(':');
  if (colon === -1) return { hostname: registry };
  return { hostname: registry.slice(0, colon), port: Number(registry.slice(colon + 1)) };
}
