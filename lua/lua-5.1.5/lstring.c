/*
** $Id: lstring.c,v 2.8.1.1 2007/12/27 13:02:25 roberto Exp $
** String table (keeps all strings handled by Lua)
** See Copyright Notice in lua.h
*/


#include <string.h>

#define lstring_c
#define LUA_CORE

#include "lua.h"

#include "lmem.h"
#include "lobject.h"
#include "lstate.h"
#include "lstring.h"



void luaS_resize (lua_State *L, int newsize) {
  GCObject **newhash;
  stringtable *tb;
  int i;
  if (G(L)->gcstate == GCSsweepstring)
    return;  /* cannot resize during GC traverse */
  newhash = luaM_newvector(L, newsize, GCObject *);
  tb = &G(L)->strt;
  for (i=0; i<newsize; i++) newhash[i] = NULL;
  /* rehash */
  for (i=0; i<tb->size; i++) {
    GCObject *p = tb->hash[i];
    while (p) {  /* for each node in the list */
      GCObject *next = p->gch.next;  /* save next */
      unsigned int h = gco2ts(p)->hash;
      int h1 = lmod(h, newsize);  /* new position */
      lua_assert(cast_int(h%newsize) == lmod(h, newsize));
      p->gch.next = newhash[h1];  /* chain it */
      newhash[h1] = p;
      p = next;
    }
  }
  luaM_freearray(L, tb->hash, tb->size, TString *);
  tb->size = newsize;
  tb->hash = newhash;
}


static TString *newlstr (lua_State *L, const char *str, size_t l,
                                       unsigned int h) {
  TString *ts;
  stringtable *tb;
  if (l+1 > (MAX_SIZET - sizeof(TString))/sizeof(char))
    luaM_toobig(L);
  ts = cast(TString *, luaM_malloc(L, (l+1)*sizeof(char)+sizeof(TString)));
  ts->tsv.len = l;
  ts->tsv.hash = h;
  ts->tsv.marked = luaC_white(G(L));
  ts->tsv.tt = LUA_TSTRING;
  ts->tsv.reserved = 0;
  memcpy(ts+1, str, l*sizeof(char));
  ((char *)(ts+1))[l] = '\0';  /* ending 0 */
  tb = &G(L)->strt;
  h = lmod(h, tb->size);
  ts->tsv.next = tb->hash[h];  /* chain new entry */
  tb->hash[h] = obj2gco(ts);
  tb->nuse++;
  if (tb->nuse > cast(lu_int32, tb->size) && tb->size <= MAX_INT/2)
    luaS_resize(L, tb->size*2);  /* too crowded */
  return ts;
}


/* rfunc: begin string hash modes (see lua.h) */
static int rfunc_default_hash_mode = RFUNC_LUA_HASH_MURMUR3;

LUA_API void rfunc_lua_set_hash_mode (int mode) {
  if (mode == RFUNC_LUA_HASH_STOCK_ALL_BYTES || mode == RFUNC_LUA_HASH_MURMUR3)
    __atomic_store_n(&rfunc_default_hash_mode, mode, __ATOMIC_SEQ_CST);
}

LUA_API int rfunc_lua_get_hash_mode (void) {
  return __atomic_load_n(&rfunc_default_hash_mode, __ATOMIC_SEQ_CST);
}

LUA_API int rfunc_lua_state_hash_mode (lua_State *L) {
  return G(L)->hashmode;
}

static lu_int32 rfunc_rotl32 (lu_int32 x, int r) {
  return (x << r) | (x >> (32 - r));
}

/* MurmurHash3 x86_32 (blocks read little-endian), as Valkey 8.1+ */
static lu_int32 rfunc_murmur3 (const unsigned char *p, size_t l, lu_int32 seed) {
  const lu_int32 c1 = 0xcc9e2d51, c2 = 0x1b873593;
  lu_int32 h = seed, k;
  size_t i, nblocks = l / 4;
  for (i = 0; i < nblocks; i++, p += 4) {
    k = (lu_int32)p[0] | ((lu_int32)p[1] << 8) | ((lu_int32)p[2] << 16) |
        ((lu_int32)p[3] << 24);
    k = rfunc_rotl32(k * c1, 15) * c2;
    h = rfunc_rotl32(h ^ k, 13) * 5 + 0xe6546b64;
  }
  k = 0;
  switch (l & 3) {
    case 3: k ^= (lu_int32)p[2] << 16;  /* FALLTHROUGH */
    case 2: k ^= (lu_int32)p[1] << 8;  /* FALLTHROUGH */
    case 1: k ^= (lu_int32)p[0];
      h ^= rfunc_rotl32(k * c1, 15) * c2;
  }
  h ^= (lu_int32)l;
  h ^= h >> 16;
  h *= 0x85ebca6b;
  h ^= h >> 13;
  h *= 0xc2b2ae35;
  h ^= h >> 16;
  return h;
}
/* rfunc: end string hash modes */


TString *luaS_newlstr (lua_State *L, const char *str, size_t l) {
  GCObject *o;
  unsigned int h = cast(unsigned int, l);  /* seed */
  /* rfunc: mode 1 = MurmurHash3; mode 0 = stock hash with step 1 */
  if (G(L)->hashmode == RFUNC_LUA_HASH_MURMUR3)
    h = rfunc_murmur3(cast(const unsigned char *, str), l, cast(lu_int32, l));
  else {
    size_t l1;
    for (l1=l; l1>=1; l1--)  /* compute hash */
      h = h ^ ((h<<5)+(h>>2)+cast(unsigned char, str[l1-1]));
  }
  for (o = G(L)->strt.hash[lmod(h, G(L)->strt.size)];
       o != NULL;
       o = o->gch.next) {
    TString *ts = rawgco2ts(o);
    if (ts->tsv.len == l && (memcmp(str, getstr(ts), l) == 0)) {
      /* string may be dead */
      if (isdead(G(L), o)) changewhite(o);
      return ts;
    }
  }
  return newlstr(L, str, l, h);  /* not found */
}


Udata *luaS_newudata (lua_State *L, size_t s, Table *e) {
  Udata *u;
  if (s > MAX_SIZET - sizeof(Udata))
    luaM_toobig(L);
  u = cast(Udata *, luaM_malloc(L, s + sizeof(Udata)));
  u->uv.marked = luaC_white(G(L));  /* is not finalized */
  u->uv.tt = LUA_TUSERDATA;
  u->uv.len = s;
  u->uv.metatable = NULL;
  u->uv.env = e;
  /* chain it on udata list (after main thread) */
  u->uv.next = G(L)->mainthread->next;
  G(L)->mainthread->next = obj2gco(u);
  return u;
}

