//! Built-in Modbus TCP simulator (a tokio-modbus server), so a site runs with
//! no device: the seed article's Python simulator, declared in the manifest.
//! Each configured register gets a new random value in `min..=max` every
//! `update_interval`; reads of anything else answer "illegal data address".

use crate::manifest::SimulatorSection;
use anyhow::Context;
use rand::Rng;
use std::collections::HashMap;
use std::future;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterArea {
    Input,
    Holding,
}

/// A register in Neuron's syntax: `1!40001` is slave 1, holding register
/// offset 0; `1!30010` input register offset 9; six-digit `1!400001` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterAddress {
    pub slave: u8,
    pub area: RegisterArea,
    pub offset: u16,
}

impl FromStr for RegisterAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "\"{text}\" is not a register address (expected SLAVE!ADDRESS such as 1!40001 or 1!30001)"
            )
        };
        let (slave, register) = text.split_once('!').ok_or_else(bad)?;
        let slave: u8 = slave.parse().map_err(|_| bad())?;
        if !(5..=6).contains(&register.len()) || !register.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let area = match register.as_bytes()[0] {
            b'3' => RegisterArea::Input,
            b'4' => RegisterArea::Holding,
            _ => return Err(bad()),
        };
        let number: u32 = register[1..].parse().map_err(|_| bad())?;
        let offset = number
            .checked_sub(1)
            .and_then(|o| u16::try_from(o).ok())
            .ok_or_else(bad)?;
        Ok(Self {
            slave,
            area,
            offset,
        })
    }
}

type Registers = Arc<RwLock<HashMap<RegisterAddress, u16>>>;

/// Binds the listener (so a port clash fails start-up with a clear error)
/// and runs the simulator until the task is dropped.
pub async fn start(name: &str, section: &SimulatorSection) -> anyhow::Result<()> {
    let ranges: Vec<(RegisterAddress, u16, u16)> = section
        .registers
        .iter()
        .map(|r| Ok((r.address.parse().map_err(anyhow::Error::msg)?, r.min, r.max)))
        .collect::<anyhow::Result<_>>()?;
    let registers: Registers = Arc::default();
    randomize(&registers, &ranges);

    let listener = TcpListener::bind(section.listen)
        .await
        .with_context(|| format!("simulator {name}: cannot listen on {}", section.listen))?;
    tracing::info!(simulator = name, listen = %section.listen, registers = ranges.len(), "Modbus simulator listening");

    let updater = {
        let registers = registers.clone();
        let period = section.update_interval;
        async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                randomize(&registers, &ranges);
            }
        }
    };
    tokio::spawn(updater);

    let name = name.to_string();
    tokio::spawn(async move {
        let server = Server::new(listener);
        let service = Arc::new(SimulatorService { registers });
        let new_service = |_addr| Ok(Some(service.clone()));
        let on_connected =
            |stream, addr| async move { accept_tcp_connection(stream, addr, new_service) };
        let on_error = {
            let name = name.clone();
            move |error| tracing::debug!(simulator = %name, %error, "connection error")
        };
        if let Err(error) = server.serve(&on_connected, on_error).await {
            tracing::error!(simulator = %name, %error, "simulator stopped");
        }
    });
    Ok(())
}

fn randomize(registers: &Registers, ranges: &[(RegisterAddress, u16, u16)]) {
    let mut rng = rand::rng();
    let mut registers = registers.write().expect("simulator registers lock");
    for &(address, min, max) in ranges {
        registers.insert(address, rng.random_range(min..=max));
    }
}

struct SimulatorService {
    registers: Registers,
}

impl SimulatorService {
    fn read(
        &self,
        slave: u8,
        area: RegisterArea,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        if count == 0 || count > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let registers = self.registers.read().expect("simulator registers lock");
        (0..count)
            .map(|i| {
                let offset = start
                    .checked_add(i)
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                registers
                    .get(&RegisterAddress {
                        slave,
                        area,
                        offset,
                    })
                    .copied()
                    .ok_or(ExceptionCode::IllegalDataAddress)
            })
            .collect()
    }

    fn write(&self, slave: u8, start: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        let mut registers = self.registers.write().expect("simulator registers lock");
        for (i, &value) in values.iter().enumerate() {
            let offset = u16::try_from(i)
                .ok()
                .and_then(|i| start.checked_add(i))
                .ok_or(ExceptionCode::IllegalDataAddress)?;
            let address = RegisterAddress {
                slave,
                area: RegisterArea::Holding,
                offset,
            };
            let slot = registers
                .get_mut(&address)
                .ok_or(ExceptionCode::IllegalDataAddress)?;
            *slot = value;
        }
        Ok(())
    }
}

impl tokio_modbus::server::Service for SimulatorService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let slave = request.slave;
        future::ready(match request.request {
            Request::ReadHoldingRegisters(start, count) => self
                .read(slave, RegisterArea::Holding, start, count)
                .map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(start, count) => self
                .read(slave, RegisterArea::Input, start, count)
                .map(Response::ReadInputRegisters),
            Request::WriteSingleRegister(address, value) => self
                .write(slave, address, &[value])
                .map(|()| Response::WriteSingleRegister(address, value)),
            Request::WriteMultipleRegisters(address, values) => {
                let count = values.len() as u16;
                self.write(slave, address, &values)
                    .map(|()| Response::WriteMultipleRegisters(address, count))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_neuron_register_addresses() {
        let a: RegisterAddress = "1!40001".parse().unwrap();
        assert_eq!(
            a,
            RegisterAddress {
                slave: 1,
                area: RegisterArea::Holding,
                offset: 0
            }
        );
        let b: RegisterAddress = "2!300010".parse().unwrap();
        assert_eq!((b.slave, b.area, b.offset), (2, RegisterArea::Input, 9));
        for bad in ["40001", "1!40000", "1!10001", "x!40001", "1!4000a", "1!4"] {
            assert!(bad.parse::<RegisterAddress>().is_err(), "{bad}");
        }
    }
}
