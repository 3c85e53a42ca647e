import { describe, expect, it } from 'vitest';
import { can, canGrant } from '../../../src/services/permissions.js';

describe('permissions', () => {
  const scoped = [{ projectId: 'a', actions: ['sign', 'read'] }];
  it('grants only listed actions on listed projects', () => {
    expect(can(scoped, 'a', 'sign')).toBe(true);
    expect(can(scoped, 'a', 'encrypt')).toBe(false);
    expect(can(scoped, 'b', 'sign')).toBe(false);
    expect(can([{ projectId: '*', actions: ['*'] }], 'anything', 'manage-pki')).toBe(true);
    expect(can([{ projectId: 'a', actions: ['*'] }], 'b', 'read')).toBe(false);
  });

  it('lets a manager grant no more than it holds', () => {
    const manager = [{ projectId: 'a', actions: ['manage-identities', 'sign', 'read'] }];
    expect(canGrant(manager, [{ projectId: 'a', actions: ['sign'] }])).toBe(true);
    expect(canGrant(manager, [{ projectId: 'a', actions: ['encrypt'] }])).toBe(false);
    expect(canGrant(manager, [{ projectId: 'a', actions: ['*'] }])).toBe(false);
    expect(canGrant(manager, [{ projectId: 'b', actions: ['read'] }])).toBe(false);
    expect(canGrant(manager, [{ projectId: '*', actions: ['read'] }])).toBe(false);
    expect(canGrant(scoped, [{ projectId: 'a', actions: ['read'] }])).toBe(false); // no manage-identities
    const admin = [{ projectId: '*', actions: ['*'] }];
    expect(canGrant(admin, [{ projectId: '*', actions: ['*'] }])).toBe(true);
  });
});
