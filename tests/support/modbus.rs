//! An independent Modbus TCP server (tokio-modbus, not the host's simulator)
//! holding the four data areas in memory and recording every write, and a
//! TCP proxy in front of it that can cut the connection mid-exchange or
//! spoil a reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

/// A slave that never answers: requests to it time out.
pub const SILENT_SLAVE: u8 = 9;

/// The four areas, 65536 entries each, shared by every other slave id.
pub struct Memory {
    pub coils: Vec<bool>,
    pub discrete_inputs: Vec<bool>,
    pub input_registers: Vec<u16>,
    pub holding_registers: Vec<u16>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            coils: vec![false; 1 << 16],
            discrete_inputs: vec![false; 1 << 16],
            input_registers: vec![0; 1 << 16],
            holding_registers: vec![0; 1 << 16],
        }
    }
}

#[derive(Clone)]
struct Service {
    memory: Arc<Mutex<Memory>>,
    writes: Arc<Mutex<Vec<Request<'static>>>>,
}

fn window<T: Clone>(area: &[T], start: u16, count: u16) -> Result<Vec<T>, ExceptionCode> {
    area.get(usize::from(start)..usize::from(start) + usize::from(count))
        .map(<[T]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

fn store<T: Clone>(area: &mut [T], start: u16, values: &[T]) -> Result<(), ExceptionCode> {
    area.get_mut(usize::from(start)..usize::from(start) + values.len())
        .ok_or(ExceptionCode::IllegalDataAddress)?
        .clone_from_slice(values);
    Ok(())
}

impl Service {
    fn answer(&self, request: Request<'static>) -> Result<Response, ExceptionCode> {
        let mut memory = self.memory.lock().unwrap();
        let memory = &mut *memory;
        if matches!(
            request,
            Request::WriteSingleCoil(..)
                | Request::WriteMultipleCoils(..)
                | Request::WriteSingleRegister(..)
                | Request::WriteMultipleRegisters(..)
        ) {
            self.writes.lock().unwrap().push(request.clone());
        }
        Ok(match request {
            Request::ReadCoils(start, count) => {
                Response::ReadCoils(window(&memory.coils, start, count)?)
            }
            Request::ReadDiscreteInputs(start, count) => {
                Response::ReadDiscreteInputs(window(&memory.discrete_inputs, start, count)?)
            }
            Request::ReadInputRegisters(start, count) => {
                Response::ReadInputRegisters(window(&memory.input_registers, start, count)?)
            }
            Request::ReadHoldingRegisters(start, count) => {
                Response::ReadHoldingRegisters(window(&memory.holding_registers, start, count)?)
            }
            Request::WriteSingleCoil(address, on) => {
                store(&mut memory.coils, address, &[on])?;
                Response::WriteSingleCoil(address, on)
            }
            Request::WriteMultipleCoils(address, bits) => {
                store(&mut memory.coils, address, &bits)?;
                Response::WriteMultipleCoils(address, bits.len() as u16)
            }
            Request::WriteSingleRegister(address, value) => {
                store(&mut memory.holding_registers, address, &[value])?;
                Response::WriteSingleRegister(address, value)
            }
            Request::WriteMultipleRegisters(address, values) => {
                store(&mut memory.holding_registers, address, &values)?;
                Response::WriteMultipleRegisters(address, values.len() as u16)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        })
    }
}

impl tokio_modbus::server::Service for Service {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        std::future::ready(if request.slave == SILENT_SLAVE {
            Ok(None)
        } else {
            self.answer(request.request).map(Some)
        })
    }
}

pub struct ModbusServer {
    pub addr: SocketAddr,
    service: Service,
}

impl ModbusServer {
    /// Serves `memory` on a free loopback port until the test ends.
    pub async fn start(memory: Memory) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Service {
            memory: Arc::new(Mutex::new(memory)),
            writes: Arc::default(),
        };
        let serving = service.clone();
        tokio::spawn(async move {
            let new_service = |_| Ok(Some(serving.clone()));
            let on_connected =
                |stream, addr| async move { accept_tcp_connection(stream, addr, new_service) };
            let _ = Server::new(listener).serve(&on_connected, |_| {}).await;
        });
        Self { addr, service }
    }

    pub fn memory(&self) -> MutexGuard<'_, Memory> {
        self.service.memory.lock().unwrap()
    }

    /// Every write request received so far, in order.
    pub fn writes(&self) -> Vec<Request<'static>> {
        self.service.writes.lock().unwrap().clone()
    }
}

/// What a `FaultyProxy` does to the next reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    /// Close the client's connection instead of passing it on: the device
    /// dropping the connection in the middle of a poll.
    Cut,
    /// Every byte flipped: noise.
    Noise,
    /// Another transaction id than the request's.
    WrongTransaction,
    /// An MBAP length beyond any Modbus frame.
    HugeLength,
    /// Another function code than the request's.
    WrongFunction,
    /// Sent, correct, a second late: beyond any test's timeout.
    Late,
}

impl Fault {
    pub const GARBAGE: [Fault; 4] = [
        Fault::Noise,
        Fault::WrongTransaction,
        Fault::HugeLength,
        Fault::WrongFunction,
    ];

    fn from_u8(value: u8) -> Self {
        [Self::None, Self::Cut, Self::Late]
            .into_iter()
            .chain(Self::GARBAGE)
            .find(|fault| *fault as u8 == value)
            .unwrap_or(Self::None)
    }

    /// The reply as the faulty device sends it; `None` to cut. A read too
    /// short to hold a reply's header and function code passes unspoiled.
    fn apply(self, reply: &mut [u8]) -> Option<()> {
        if reply.len() < 8 {
            return (self != Fault::Cut).then_some(());
        }
        match self {
            Fault::None | Fault::Late => {}
            Fault::Cut => return None,
            Fault::Noise => reply.iter_mut().for_each(|byte| *byte ^= 0x5A),
            Fault::WrongTransaction => reply[1] = reply[1].wrapping_add(1),
            Fault::HugeLength => reply[4..6].copy_from_slice(&0xFFF0u16.to_be_bytes()),
            Fault::WrongFunction => reply[7] = if reply[7] == 0x03 { 0x04 } else { 0x03 },
        }
        Some(())
    }
}

/// A TCP proxy to a server that, once told to, spoils the next reply (see
/// [`Fault`]).
pub struct FaultyProxy {
    pub addr: SocketAddr,
    next_fault: Arc<AtomicU8>,
}

impl FaultyProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let next_fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let fault = next_fault.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                tokio::spawn(relay(client, server, fault.clone()));
            }
        });
        Self { addr, next_fault }
    }

    pub fn spoil_next_reply(&self, fault: Fault) {
        self.next_fault.store(fault as u8, Ordering::SeqCst);
    }
}

/// Relays both ways until either side closes, or a reply is to be cut.
/// Each read of the server is one reply (one request is in flight at a
/// time, and a reply is far smaller than the read buffer).
async fn relay(client: TcpStream, server: TcpStream, fault: Arc<AtomicU8>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::io::copy(&mut client_read, &mut server_write);
    let replies = async {
        let mut buffer = [0u8; 512];
        loop {
            let read = server_read.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let mut reply = buffer[..read].to_vec();
            let fault = Fault::from_u8(fault.swap(Fault::None as u8, Ordering::SeqCst));
            if fault.apply(&mut reply).is_none() {
                return Ok(());
            }
            if fault == Fault::Late {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            client_write.write_all(&reply).await?;
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = replies => {}
    }
}
