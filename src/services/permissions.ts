/**
 * What an identity may do: a list of {projectId, actions}. `*` as an action grants every
 * action on that project; `*` as a projectId applies the entry to every project.
 */
import { permissionDenied } from '../errors.js';

export const ACTIONS = [
  'read',
  'create',
  'update',
  'delete',
  'encrypt',
  'decrypt',
  'sign',
  'verify',
  'issue-certificate',
  'manage-pki',
  'manage-identities',
] as const;
export type Action = (typeof ACTIONS)[number];

/** One entry of an identity's permissions: actions (or `*`) on a project (or `*`). */
export interface Permission {
  projectId: string;
  actions: string[];
}

export interface Principal {
  identityId: string;
  name: string;
  permissions: Permission[];
}

export function can(permissions: Permission[], projectId: string, action: Action): boolean {
  return permissions.some(
    (entry) => (entry.projectId === projectId || entry.projectId === '*') && (entry.actions.includes(action) || entry.actions.includes('*')),
  );
}

/** Whether the identity holds `action` on at least one project. */
export function canSomewhere(permissions: Permission[], action: Action): boolean {
  return permissions.some((entry) => entry.actions.includes(action) || entry.actions.includes('*'));
}

export function authorize(principal: Principal, projectId: string, action: Action): void {
  if (!can(principal.permissions, projectId, action)) throw permissionDenied(action, projectId);
}

/**
 * Whether `grantor` may hand out `granted`: it must hold manage-identities on each project
 * named, and hold there every action it grants (no identity creates one stronger than itself).
 */
export function canGrant(grantor: Permission[], granted: Permission[]): boolean {
  return granted.every((entry) => {
    if (!can(grantor, entry.projectId, 'manage-identities')) return false;
    const actions = entry.actions.includes('*') ? ['*'] : entry.actions;
    return actions.every((action) =>
      action === '*'
        ? grantor.some((g) => (g.projectId === entry.projectId || g.projectId === '*') && g.actions.includes('*'))
        : can(grantor, entry.projectId, action as Action),
    );
  });
}
