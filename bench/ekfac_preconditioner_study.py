#!/usr/bin/python3
"""Independent check of how well EK-FAC preconditions CG on a damped Gauss-Newton matrix (docs/FIDELITY.md).
A small ReLU MLP (49-16-10 on Fashion-MNIST images pooled to 7x7, 1,000 examples) is trained with torch; its damped
GGN is formed densely from per-example Jacobians, and CG on one query gradient is run with no preconditioner, the
EK-FAC inverse (empirical Fisher, one-sample true Fisher, exact-expectation true Fisher) and the exact
block-diagonal (per-layer) inverse.  Usage: /usr/bin/python3 bench/ekfac_preconditioner_study.py DAMPING"""
import numpy as np, torch, gzip, struct
torch.manual_seed(0); np.random.seed(0)
def idx(p):
    b=gzip.open(p).read(); m,=struct.unpack('>I',b[:4]); nd=m&0xff; dims=struct.unpack('>'+'I'*nd,b[4:4+4*nd]); return np.frombuffer(b[4+4*nd:],np.uint8).reshape(dims)
X=idx('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz')[:1000].astype(np.float64)/255
Y=idx('/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz')[:1000].astype(np.int64)
X=X.reshape(-1,7,4,7,4).mean(axis=(2,4)).reshape(-1,49)
dims=[49,16,10]
Ws=[torch.randn(dims[i+1],dims[i]+1,dtype=torch.float64)/np.sqrt(dims[i]) for i in range(2)]
for W in Ws: W.requires_grad_(True)
x=torch.from_numpy(X); y=torch.from_numpy(Y)
def fwd(Ws,x,keep=False):
    acts=[];pre=[];h=x
    for l,W in enumerate(Ws):
        a=torch.cat([h,torch.ones(h.shape[0],1,dtype=h.dtype)],1); acts.append(a); s=a@W.T; pre.append(s)
        h=torch.relu(s) if l<len(Ws)-1 else s
    return h,acts,pre
opt=torch.optim.Adam(Ws,lr=1e-2)
for it in range(300):
    opt.zero_grad(); z,_,_=fwd(Ws,x); loss=torch.nn.functional.cross_entropy(z,y); loss.backward(); opt.step()
print("train acc", (fwd(Ws,x)[0].argmax(1)==y).double().mean().item())
Ws=[W.detach() for W in Ws]
N=x.shape[0]; P=sum(W.numel() for W in Ws)
# per-example Jacobians of logits wrt params: J (N, C, P)
def logits_flat(theta, xi):
    ws=[];o=0
    for W in Ws: ws.append(theta[o:o+W.numel()].reshape(W.shape)); o+=W.numel()
    return fwd(ws,xi[None])[0][0]
theta=torch.cat([W.reshape(-1) for W in Ws])
J=torch.stack([torch.autograd.functional.jacobian(lambda t: logits_flat(t,x[n]),theta) for n in range(N)])  # (N,C,P)
z=fwd(Ws,x)[0]; p=torch.softmax(z,1)
H=torch.diag_embed(p)-p[:,:,None]*p[:,None,:]
G=torch.einsum('ncp,ncd,ndq->pq',J,H,J)/N
import sys
lam=float(sys.argv[1])
A=G+lam*torch.eye(P,dtype=torch.float64)
g=torch.autograd.functional.jacobian(lambda t: torch.nn.functional.cross_entropy(logits_flat(t,x[0])[None],y[:1],reduction='sum'),theta)
# layer blocks: param order per layer W (dout, din+1) row-major (bias last column)
offs=[0]; 
for W in Ws: offs.append(offs[-1]+W.numel())
_,acts,pre=fwd(Ws,x)
def ds_for_labels(lab):
    C=10; dz=p.clone(); dz[torch.arange(N),lab]-=1
    ds=[None,None]; ds[1]=dz; ds[0]=(dz@Ws[1][:,:-1])*(pre[0]>0); return ds
def ekfac(kind, exact=False):
    blocks=[]
    for l in range(2):
        a=acts[l]; 
        if kind=='true' and exact:
            # expectation over labels: S = sum_c p_c ds_c ds_c^T
            dsl=[ds_for_labels(torch.full((N,),c))[l] for c in range(10)]
            S=sum((p[:,c:c+1]*dsl[c]).T@dsl[c] for c in range(10))/N
        else:
            lab=torch.multinomial(p,1)[:,0] if kind=='true' else y
            dsl=[ds_for_labels(lab)[l]]; S=dsl[0].T@dsl[0]/N
        Am=a.T@a/N; eA,QA=torch.linalg.eigh(Am); eS,QS=torch.linalg.eigh(S)
        if kind=='true' and exact:
            Lam=sum(((dsl[c]@QS)**2*p[:,c:c+1]).T@((a@QA)**2) for c in range(10))/N
        else:
            Lam=((dsl[0]@QS)**2).T@((a@QA)**2)/N
        blocks.append((QA,QS,Lam))
    return blocks
def apply_ekfac(blocks,v,kfac=False):
    out=torch.zeros_like(v)
    for l,(QA,QS,Lam) in enumerate(blocks):
        W=Ws[l]; V=v[offs[l]:offs[l+1]].reshape(W.shape)
        R=QS.T@V@QA; R=R/(Lam+lam); out[offs[l]:offs[l+1]]=(QS@R@QA.T).reshape(-1)
    return out
def cg(A,b,M=None,tol=1e-6,maxit=2000):
    x=torch.zeros_like(b); r=b.clone(); z=M(r) if M else r; d=z.clone(); rz=r@z; nb=b.norm()
    for k in range(maxit):
        Ad=A@d; al=rz/(d@Ad); x+=al*d; r-=al*Ad
        if r.norm()<tol*nb: return k+1
        z=M(r) if M else r; rzn=r@z; d=z+(rzn/rz)*d; rz=rzn
    return maxit
print("P",P,"none",cg(A,g))
for kind,exact in [('empirical',False),('true',False),('true',True)]:
    bl=ekfac(kind,exact)
    print(kind,"exact-expectation" if exact else "", "EK-FAC PC", cg(A,g,lambda r: apply_ekfac(bl,r)))
# exact block-diagonal PC
Binv=[torch.linalg.inv(A[offs[l]:offs[l+1],offs[l]:offs[l+1]]) for l in range(2)]
def bd(r):
    o=torch.zeros_like(r)
    for l in range(2): o[offs[l]:offs[l+1]]=Binv[l]@r[offs[l]:offs[l+1]]
    return o
print("exact block-diagonal PC", cg(A,g,bd))
